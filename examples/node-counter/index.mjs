// Tenant isolation demo: a counter in memory and one in /tmp; every tenant gets its own environment, so its own counts.
import { readFileSync, writeFileSync } from 'node:fs';

let memory = 0;

export const handler = async (event, context) => {
  memory += 1;
  let disk = 0;
  try {
    disk = Number(readFileSync('/tmp/count', 'utf8')) || 0;
  } catch {
    // first invocation in this environment: no file yet
  }
  disk += 1;
  writeFileSync('/tmp/count', String(disk));
  return { tenant: context.tenantId, memory, disk };
};
