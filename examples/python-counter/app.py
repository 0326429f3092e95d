# Tenant isolation demo: a counter in memory and one in /tmp; every tenant gets its own environment, so its own counts.
memory = 0


def handler(event, context):
    global memory
    memory += 1
    try:
        with open("/tmp/count") as f:
            disk = int(f.read() or 0)
    except FileNotFoundError:  # first invocation in this environment
        disk = 0
    disk += 1
    with open("/tmp/count", "w") as f:
        f.write(str(disk))
    return {"tenant": context.tenant_id, "memory": memory, "disk": disk}
