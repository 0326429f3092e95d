# Handler served by the official awslambdaric client; the tenant id arrives in context.tenant_id.
def handler(event, context):
    return {"tenant": context.tenant_id, "requestId": context.aws_request_id}
