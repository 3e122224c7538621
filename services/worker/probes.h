/* cms-worker's /healthz, /readyz and /metrics (common/http.h), served by a
 * thread of their own with its own loop, because the worker's thread trains
 * and blocks. /readyz is 200 while the worker is bound to its durable and
 * connected to NATS (worker_ready); /metrics renders cms_metrics_default()
 * with the process metrics. */
#ifndef WORKER_PROBES_H
#define WORKER_PROBES_H

typedef struct worker_probes worker_probes;

/* Listens on addr (numeric HOST:PORT, port 0 picks one) and serves until
 * worker_probes_stop. Returns 0, or a negative libuv error (the address is
 * malformed or cannot be bound), *out then NULL. */
int worker_probes_start(const char *addr, worker_probes **out) __attribute__((warn_unused_result));
int worker_probes_port(const worker_probes *p); /* the bound port */
/* Closes the server, joins its thread and frees p. NULL-safe. */
void worker_probes_stop(worker_probes *p);

#endif
