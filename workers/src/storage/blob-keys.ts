/**
 * Where things live in R2 (BLOBS). Every key starts with the owning tenant, so a listing or a
 * bulk deletion per tenant is one prefix; object names use our own ids, never a user-chosen name
 * (adapter ids contain ':' and a suffix chosen by the tenant).
 *
 *   tenants/{tenant}/files/{file}.jsonl                          training and validation files
 *   tenants/{tenant}/jobs/{job}/adapter.safetensors              a job's finished adapter
 *   tenants/{tenant}/jobs/{job}/checkpoints/step-{n}.safetensors a checkpoint's servable adapter
 *   tenants/{tenant}/jobs/{job}/state.safetensors                trainer state, to resume elsewhere
 *   tenants/{tenant}/imports/{import}/adapter.safetensors        a PEFT adapter projected onto the basis
 */

/** The key of an uploaded file. */
export function fileBlobKey(tenantId: string, fileId: string): string {
  return `tenants/${tenantId}/files/${fileId}.jsonl`;
}

/** The key of a job's finished adapter. */
export function adapterBlobKey(tenantId: string, jobId: string): string {
  return `tenants/${tenantId}/jobs/${jobId}/adapter.safetensors`;
}

/** The key of a checkpoint's adapter. */
export function checkpointBlobKey(tenantId: string, jobId: string, step: number): string {
  return `tenants/${tenantId}/jobs/${jobId}/checkpoints/step-${step}.safetensors`;
}

/** The key of a job's latest trainer state (overwritten at each checkpoint). */
export function stateBlobKey(tenantId: string, jobId: string): string {
  return `tenants/${tenantId}/jobs/${jobId}/state.safetensors`;
}

/** The key of an imported (PEFT → PiCa) adapter. */
export function importedAdapterBlobKey(tenantId: string, importId: string): string {
  return `tenants/${tenantId}/imports/${importId}/adapter.safetensors`;
}
