/**
 * Per-tenant rate limits, one Durable Object per tenant (so every edge location agrees): requests
 * per minute over a sliding 60 s window, and concurrent streams as leases that the edge releases
 * when a response ends. A lease not released within LEASE_SECONDS (a lost release) expires.
 */
import { DurableObject } from "cloudflare:workers";

export interface TenantLimits {
  requestsPerMinute: number;
  concurrentStreams: number;
}

export type Admission = { ok: true; lease: string } | { ok: false; limit: "requests_per_minute" | "concurrent_streams"; retryAfterSeconds: number };

const WINDOW_MS = 60_000;
const LEASE_MS = 15 * 60_000;

export class TenantLimiter extends DurableObject<Env> {
  private readonly arrivals: number[] = []; // request times in the window, oldest first
  private readonly leases = new Map<string, number>(); // lease → expiry

  /** Admits one request under `limits`, or says which limit refused it and when to retry. */
  acquire(limits: TenantLimits): Admission {
    const now = Date.now();
    while (this.arrivals.length > 0 && this.arrivals[0] <= now - WINDOW_MS) this.arrivals.shift();
    for (const [lease, expiry] of this.leases) if (expiry <= now) this.leases.delete(lease);
    if (this.arrivals.length >= limits.requestsPerMinute) {
      const oldest = this.arrivals[this.arrivals.length - limits.requestsPerMinute];
      return { ok: false, limit: "requests_per_minute", retryAfterSeconds: Math.max(1, Math.ceil((oldest + WINDOW_MS - now) / 1000)) };
    }
    if (this.leases.size >= limits.concurrentStreams) return { ok: false, limit: "concurrent_streams", retryAfterSeconds: 1 };
    this.arrivals.push(now);
    const lease = crypto.randomUUID();
    this.leases.set(lease, now + LEASE_MS);
    return { ok: true, lease };
  }

  /** Ends a request's lease; releasing twice is harmless. */
  release(lease: string): void {
    this.leases.delete(lease);
  }
}
