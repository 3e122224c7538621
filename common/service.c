/* The service runtime; see service.h. */
#include "service.h"

#include "bus.h"
#include "http.h"
#include "log.h"
#include "natsauth.h"

#include <jansson.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CMS_SCHEMA_VERSION
#error "CMS_SCHEMA_VERSION is set by common/CMakeLists.txt"
#endif

#define SCHEMA_RECHECK_MS 5000

static const cms_option common_options[] = {CMS_OPTIONS_COMMON};
static const cms_option command_options[] = {CMS_OPTIONS_COMMANDS};
static const cms_option consumer_options[] = {CMS_OPTIONS_CONSUMERS};
static const cms_option outbox_options[] = {CMS_OPTIONS_OUTBOX};

/* One of the spec's consumers, and how its callbacks reach the spec. */
typedef struct service_consumer {
    struct cms_service *s;
    const cms_service_consumer *def;
    cms_consumer *c;
    char name[128]; /* def->name, and -<consumer-suffix> */
} service_consumer;

/* Draining goes through these stages in order; each ends in a callback. */
typedef enum {
    DRAIN_NONE,
    DRAIN_COMMANDS,  /* the command server answers what it holds */
    DRAIN_CONSUMERS, /* the consumers settle what they hold, release their leases */
    DRAIN_SERVICE,   /* the spec's own in-flight work */
    DRAIN_OUTBOX,    /* the relay settles its publishes */
    DRAIN_DONE,
} drain_stage;

struct cms_service {
    const cms_service_spec *spec;
    char name[64];
    uv_loop_t loop;
    cms_option *options;
    cms_config *cfg;
    cms_proc *proc;
    cms_pg *pg;
    cms_nats *nats;
    cms_http *http;
    cms_outbox *outbox;
    cms_cmd *cmd;
    cms_auth *auth;
    service_consumer *consumers; /* spec->nconsumers */
    size_t consumers_draining;
    uv_timer_t schema_timer;
    bool streams_ready;
    bool schema_checking;
    int schema_version; /* as last read; -1 before */
    drain_stage stage;
    int drain_hook;
    bool started; /* the spec's start succeeded: its drain and close apply */
};

static void drain_next(cms_service *s);

uv_loop_t *cms_service_loop(const cms_service *s)
{
    return (uv_loop_t *)&s->loop;
}
const cms_config *cms_service_config(const cms_service *s)
{
    return s->cfg;
}
cms_pg *cms_service_pg(const cms_service *s)
{
    return s->pg;
}
cms_nats *cms_service_nats(const cms_service *s)
{
    return s->nats;
}
cms_cmd *cms_service_cmd(const cms_service *s)
{
    return s->cmd;
}
cms_outbox *cms_service_outbox(const cms_service *s)
{
    return s->outbox;
}
cms_auth *cms_service_auth(const cms_service *s)
{
    return s->auth;
}
cms_consumer *cms_service_consumer_at(const cms_service *s, size_t i)
{
    return s->consumers && i < s->spec->nconsumers ? s->consumers[i].c : NULL;
}
cms_proc *cms_service_proc(const cms_service *s)
{
    return s->proc;
}
int cms_service_schema_version(void)
{
    return CMS_SCHEMA_VERSION;
}

/* ---- readiness ---- */

static void schema_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_service *s = arg;
    s->schema_checking = false;
    if (err == CMS_PG_OK) {
        const PGresult *r = cms_pg_result_get(res, 0);
        int v = r && PQntuples(r) ? (int)strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
        if (v != s->schema_version)
            cms_log(v >= CMS_SCHEMA_VERSION ? CMS_LOG_INFO : CMS_LOG_WARN, "schema version",
                    "{s:i, s:i}", "database", v, "expected", CMS_SCHEMA_VERSION);
        s->schema_version = v;
    } else if (err == CMS_PG_ESQL && strcmp(cms_pg_result_sqlstate(res), "42P01") == 0) {
        s->schema_version = 0; /* no schema_migrations table: never migrated */
    }
    /* while behind, schema_tick asks again */
}

static void check_schema(cms_service *s)
{
    if (s->schema_checking || s->stage != DRAIN_NONE)
        return;
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL ||
        cms_pg_job_sql(job, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
                       NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return;
    }
    if (cms_pg_submit(s->pg, &job, schema_read, s) == CMS_PG_OK)
        s->schema_checking = true;
}

static void schema_tick(uv_timer_t *t)
{
    cms_service *s = t->data;
    if (s->schema_version < CMS_SCHEMA_VERSION && cms_pg_ready(s->pg) > 0)
        check_schema(s);
}

static void pg_state(void *arg, int ready)
{
    cms_service *s = arg;
    if (ready > 0)
        check_schema(s); /* a new server may be a restored or migrated one */
}

static void nats_state(void *arg, bool connected)
{
    cms_service *s = arg;
    /* events may have been missed while disconnected */
    cms_auth_nats_state(s->auth, connected);
}

static void streams_done(void *arg, cms_nats_err err)
{
    cms_service *s = arg;
    s->streams_ready = err == CMS_NATS_OK;
    if (!s->streams_ready)
        cms_log_error("streams not provisioned", "{s:s}", "error", cms_nats_strerror(err));
}

static bool ready(void *arg, char *why, size_t len)
{
    cms_service *s = arg;
    if (s->stage != DRAIN_NONE)
        snprintf(why, len, "shutting down\n");
    else if (cms_pg_ready(s->pg) == 0)
        snprintf(why, len, "no database connection\n");
    else if (s->schema_version < CMS_SCHEMA_VERSION)
        snprintf(why, len, "database schema at version %d, need %d: run cms-migrate up\n",
                 s->schema_version < 0 ? 0 : s->schema_version, CMS_SCHEMA_VERSION);
    else if (cms_nats_auth_refused(s->nats))
        snprintf(why, len, "NATS refuses the credentials (see the log)\n");
    else if (!cms_nats_is_connected(s->nats))
        snprintf(why, len, "not connected to NATS\n");
    else if (!s->streams_ready)
        snprintf(why, len, "JetStream streams not found yet: run cms-migrate provision\n");
    else if (s->spec->ready && !s->spec->ready(s, s->spec->arg, why, len))
        return false;
    else {
        for (size_t i = 0; s->consumers && i < s->spec->nconsumers; i++)
            if (s->consumers[i].c && !cms_consumer_ready(s->consumers[i].c, why, len))
                return false;
        return true;
    }
    return false;
}

/* ---- draining and closing ---- */

static void stage_closed(void *arg)
{
    drain_next(arg);
}

static void consumer_drained(void *arg)
{
    cms_service *s = arg;
    if (--s->consumers_draining == 0)
        drain_next(s);
}

void cms_service_drained(cms_service *s)
{
    if (s->stage == DRAIN_SERVICE)
        drain_next(s);
}

/* Moves to the next stage and starts it; each stage ends by calling here. */
static void drain_next(cms_service *s)
{
    for (;;) {
        s->stage++;
        switch (s->stage) {
        case DRAIN_NONE:
            break;
        case DRAIN_COMMANDS:
            if (s->cmd) {
                cms_cmd_close(s->cmd, stage_closed, s);
                return;
            }
            break;
        case DRAIN_CONSUMERS:
            s->consumers_draining = 1; /* until every drain has begun */
            for (size_t i = 0; s->consumers && i < s->spec->nconsumers; i++) {
                if (s->consumers[i].c) {
                    s->consumers_draining++;
                    cms_consumer_drain(s->consumers[i].c, consumer_drained, s);
                }
            }
            if (--s->consumers_draining > 0)
                return;
            break;
        case DRAIN_SERVICE:
            if (s->started && s->spec->drain) {
                s->spec->drain(s, s->spec->arg);
                return;
            }
            break;
        case DRAIN_OUTBOX:
            if (s->outbox) {
                cms_outbox_close(s->outbox, stage_closed, s);
                return;
            }
            break;
        case DRAIN_DONE:
            cms_log_info("drained", NULL);
            cms_proc_hook_done(s->proc, s->drain_hook);
            return;
        }
    }
}

static void on_drain(cms_proc *p, int hook, void *arg)
{
    (void)p;
    cms_service *s = arg;
    s->drain_hook = hook;
    uv_timer_stop(&s->schema_timer);
    drain_next(s);
}

static void on_close(cms_proc *p, void *arg)
{
    (void)p;
    cms_service *s = arg;
    if (s->started && s->spec->close)
        s->spec->close(s, s->spec->arg);
    if (s->schema_timer.data)
        uv_close((uv_handle_t *)&s->schema_timer, NULL);
    for (size_t i = 0; s->consumers && i < s->spec->nconsumers; i++)
        cms_consumer_close(s->consumers[i].c, NULL, NULL);
    cms_outbox_abort(s->outbox); /* a no-op after a clean drain */
    cms_auth_close(s->auth, NULL, NULL);
    if (s->nats)
        cms_nats_close(s->nats, NULL, NULL);
    if (s->pg)
        cms_pg_close(s->pg, NULL, NULL);
    if (s->http)
        cms_http_close(s->http, NULL, NULL);
}

/* ---- start ---- */

/* The common options, the command server's when the spec serves commands,
 * the consumers' when it consumes (a service offers no option it does not
 * use), then the spec's own. */
static cms_option *merge_options(const cms_service_spec *spec, size_t *n)
{
    size_t nc = sizeof common_options / sizeof common_options[0];
    size_t nk = spec->commands ? sizeof command_options / sizeof command_options[0] : 0;
    size_t ne = spec->nconsumers ? sizeof consumer_options / sizeof consumer_options[0] : 0;
    size_t no = spec->outbox ? sizeof outbox_options / sizeof outbox_options[0] : 0;
    cms_option *o = calloc(nc + nk + ne + no + spec->noptions, sizeof *o);
    if (o == NULL)
        return NULL;
    memcpy(o, common_options, sizeof common_options);
    if (nk)
        memcpy(o + nc, command_options, sizeof command_options);
    if (ne)
        memcpy(o + nc + nk, consumer_options, sizeof consumer_options);
    if (no)
        memcpy(o + nc + nk + ne, outbox_options, sizeof outbox_options);
    if (spec->noptions)
        memcpy(o + nc + nk + ne + no, spec->options, spec->noptions * sizeof *o);
    *n = nc + nk + ne + no + spec->noptions;
    return o;
}

/* ---- consumers ---- */

static cms_consumer_verdict consumer_handle(void *arg, const Cms__V1__Envelope *env,
                                            cms_pg_job *job, const char **reason)
{
    service_consumer *sc = arg;
    return sc->def->handle(sc->s->spec->arg, env, job, reason);
}

static void consumer_committed(void *arg, const Cms__V1__Envelope *env)
{
    service_consumer *sc = arg;
    if (sc->s->outbox)
        cms_outbox_kick(sc->s->outbox); /* the handler's statements may have added events */
    if (sc->def->committed)
        sc->def->committed(sc->s->spec->arg, env);
}

/* A consumer's rows (processed_events, its lease "consumer:<name>") are
 * its service's by its name, which the database checks against the
 * service's role (migrations/0009_roles): the service's name, or
 * "<service>-<more>". */
static bool consumer_name_ours(const char *service, const char *name)
{
    size_t n = strlen(service);
    return name != NULL && cms_consumer_service_len(name) == n && strncmp(name, service, n) == 0;
}

static int start_consumers(cms_service *s)
{
    const cms_config *c = s->cfg;
    int64_t ack_wait = cms_config_duration_ms(c, "consumer-ack-wait");
    int64_t lease = cms_config_duration_ms(c, "consumer-lease");
    int64_t retention = cms_config_duration_ms(c, "processed-events-retention");
    int64_t inflight = cms_config_int(c, "consumer-max-inflight");
    int64_t concurrency = cms_config_int(c, "consumer-concurrency");
    if (ack_wait < 1000 || lease < 1000 || inflight < 1 || inflight > 65536 || concurrency < 1 ||
        concurrency > 1024) {
        cms_log_error("bad option: consumer-ack-wait and consumer-lease must be at least 1s, "
                      "consumer-max-inflight 1 to 65536, consumer-concurrency 1 to 1024",
                      NULL);
        return 1;
    }
    if (retention < cms_consumer_min_retention_ms(ack_wait)) {
        cms_log_error("bad option: processed-events-retention is shorter than an applied event "
                      "can come again (at least 1h, 10 ack waits and twice the dedupe window)",
                      "{s:I}", "least_ms", (json_int_t)cms_consumer_min_retention_ms(ack_wait));
        return 1;
    }
    s->consumers = calloc(s->spec->nconsumers, sizeof *s->consumers);
    if (s->consumers == NULL)
        return 1;
    for (size_t i = 0; i < s->spec->nconsumers; i++) {
        service_consumer *sc = &s->consumers[i];
        sc->s = s;
        sc->def = &s->spec->consumers[i];
        if (!consumer_name_ours(s->name, sc->def->name)) {
            cms_log_error("bad consumer name: it must be the service's name or begin with "
                          "\"<service>-\"",
                          "{s:s, s:s}", "service", s->name, "consumer",
                          sc->def->name ? sc->def->name : "");
            return 1;
        }
        const char *suffix = cms_config_str(c, "consumer-suffix");
        int nn = snprintf(sc->name, sizeof sc->name, "%s%s%s", sc->def->name,
                          suffix && suffix[0] ? "-" : "", suffix ? suffix : "");
        if (nn < 0 || (size_t)nn >= sizeof sc->name) {
            cms_log_error("bad option: consumer-suffix is too long", NULL);
            return 1;
        }
        cms_consumer_options o = {.name = sc->name,
                                  .filter_subject = sc->def->filter_subject,
                                  .max_inflight = (int)inflight,
                                  .max_concurrent = (int)concurrency,
                                  .ack_wait_ms = ack_wait,
                                  .lease_ms = lease,
                                  .retention_ms = retention,
                                  .handle = consumer_handle,
                                  .committed = consumer_committed,
                                  .arg = sc};
        cms_consumer_err err = cms_consumer_create(&s->loop, s->pg, s->nats, &o, &sc->c);
        if (err != CMS_CONSUMER_OK) {
            cms_log_error("cannot start the event consumer", "{s:s, s:s}", "consumer",
                          sc->def->name ? sc->def->name : "", "error", cms_consumer_strerror(err));
            return 1;
        }
    }
    return 0;
}

static int start(cms_service *s)
{
    const cms_config *c = s->cfg;
    char nats_name[96];
    snprintf(nats_name, sizeof nats_name, "cms-%s", s->name);
    int rc =
        cms_proc_create(&s->loop, (uint64_t)cms_config_duration_ms(c, "drain-timeout"), &s->proc);
    if (rc != 0) {
        cms_log_error("cannot set up signal handling", NULL);
        return 1;
    }
    /* first, so that a start failing half-way still closes what it opened */
    if (cms_proc_on_drain_named(s->proc, s->name, on_drain, s) < 0 ||
        cms_proc_on_close(s->proc, on_close, s) < 0)
        return 1;
    cms_pg_options po = {.conninfo = cms_config_str(c, "database-url"),
                         .application_name = nats_name,
                         .pool_size = (int)cms_config_int(c, "pg-pool-size"),
                         .on_state = pg_state,
                         .state_arg = s};
    if (cms_pg_create(&s->loop, &po, &s->pg) != CMS_PG_OK) {
        cms_log_error("cannot create the database pool: check --database-url", NULL);
        return 1;
    }
    cms_nats_options no = {.url = cms_config_str(c, "nats-url"),
                           .name = nats_name,
                           .on_state = nats_state,
                           .state_arg = s,
                           /* callers wait on every command reply */
                           .send_asap = s->spec->commands};
    cms_natsauth_from_config(c, &no.security);
    if (cms_nats_create(&s->loop, &no, &s->nats) != 0) {
        char shown[512];
        (void)cms_config_redact(no.url, shown, sizeof shown);
        cms_log_error("cannot create the NATS connection: check --nats-url, --nats-creds and the "
                      "TLS options (the reason is logged above)",
                      "{s:s}", "url", shown);
        return 1;
    }
    if (cms_bus_provision(s->nats, streams_done, s) != 0)
        return 1;
    /* the standard metrics every exporter has, once per process */
    cms_metrics *mx = cms_metrics_default();
    cms_gauge_set(cms_metrics_gauge(mx, "cms_build_info",
                                    "A constant 1, labelled with the version of this build",
                                    "version=\"" CMS_VERSION "\""),
                  1);
    if (cms_metrics_add_process(mx) != 0) {
        cms_log_error("cannot register the process metrics: out of memory", NULL);
        return 1;
    }
    const char *addr = cms_config_str(c, "http-addr");
    if (cms_http_create(&s->loop, addr, &s->http) != 0 ||
        cms_http_serve_probes(s->http, cms_metrics_default(), ready, s) != 0) {
        cms_log_error("cannot serve HTTP: is --http-addr free and numeric (HOST:PORT)?", "{s:s}",
                      "addr", addr);
        return 1;
    }
    uv_timer_init(&s->loop, &s->schema_timer);
    s->schema_timer.data = s;
    uv_timer_start(&s->schema_timer, schema_tick, SCHEMA_RECHECK_MS, SCHEMA_RECHECK_MS);
    if (s->spec->outbox) {
        cms_outbox_options oo = {.source = s->name,
                                 .retain_ms = cms_config_duration_ms(s->cfg, "outbox-retain")};
        if (cms_outbox_create(&s->loop, s->pg, s->nats, &oo, &s->outbox) != 0)
            return 1;
    }
    if (s->spec->commands) {
        int64_t ttl = cms_config_duration_ms(c, "auth-cache");
        if (ttl < 1 || ttl > 600000) {
            cms_log_error("bad option: auth-cache must be 1ms to 10m", NULL);
            return 1;
        }
        /* cms-identity's contract with every authenticating service (bus.h) */
        char authenticate[CMS_BUS_SUBJECT_MAX];
        if (cms_bus_command_subject(authenticate, sizeof authenticate,
                                    cms_config_str(c, "command-prefix"), CMS_BUS_IDENTITY_SERVICE,
                                    CMS_BUS_AUTHENTICATE_VERB) != CMS_BUS_OK) {
            cms_log_error("bad option: command-prefix is too long", NULL);
            return 1;
        }
        cms_auth_options ao = {.ttl_ms = ttl,
                               .authenticate_subject = authenticate,
                               .resolver = s->spec->auth_resolver,
                               .resolver_arg = s->spec->arg,
                               .event_subjects = cms_bus_auth_event_subjects,
                               .event_types = cms_bus_auth_event_types};
        if (cms_auth_create(&s->loop, s->nats, &ao, &s->auth) != 0)
            return 1;
        cms_cmd_options co = {.service = s->name,
                              .prefix = cms_config_str(c, "command-prefix"),
                              .pg = s->spec->read_only_commands ? NULL : s->pg,
                              .auth = s->auth};
        if (cms_cmd_create(&s->loop, s->nats, &co, &s->cmd) != 0) {
            cms_log_error("cannot serve commands: check --command-prefix", NULL);
            return 1;
        }
    }
    if (s->spec->start && s->spec->start(s, s->spec->arg) != 0) {
        cms_log_error("service start failed", NULL);
        return 1;
    }
    s->started = true;
    if (s->spec->nconsumers && start_consumers(s) != 0)
        return 1;
    if (s->cmd && cms_cmd_start(s->cmd) != 0)
        return 1;
    cms_log_info("started", "{s:s, s:i, s:s}", "http", addr, "schema_version", CMS_SCHEMA_VERSION,
                 "version", CMS_VERSION);
    return 0;
}

int cms_service_main(int argc, char **argv, const cms_service_spec *spec)
{
    cms_service *s = calloc(1, sizeof *s);
    int code = 1;
    size_t nopts = 0;
    char prog[80];
    if (s == NULL)
        return 1;
    s->spec = spec;
    s->schema_version = -1;
    snprintf(s->name, sizeof s->name, "%s", spec->name);
    snprintf(prog, sizeof prog, "cms-%s", spec->name);
    s->options = merge_options(spec, &nopts);
    if (s->options == NULL)
        goto out;
    switch (cms_config_parse(s->options, nopts, argc, argv, prog, spec->summary, NULL, &s->cfg)) {
    case CMS_CONFIG_OK:
        break;
    case CMS_CONFIG_EXIT_OK:
        code = 0;
        goto out;
    case CMS_CONFIG_EXIT_USAGE:
        code = 2;
        goto out;
    }
    cms_log_level level;
    if (!cms_log_level_parse(cms_config_str(s->cfg, "log-level"), &level)) {
        fprintf(stderr, "%s: --log-level must be debug, info, warn or error; try --help\n", prog);
        code = 2;
        goto out;
    }
    cms_log_init(s->name, level, NULL);
    cms_config_log(s->cfg);
    if (uv_loop_init(&s->loop) != 0)
        goto out;
    if (start(s) != 0) {
        if (s->proc) {
            cms_proc_stop(s->proc); /* close what was opened, then exit 1 */
            (void)cms_proc_run(s->proc);
        }
        goto out_loop;
    }
    code = cms_proc_run(s->proc);
out_loop:
    if (uv_loop_close(&s->loop) != 0)
        cms_log_warn("loop closed with handles open", NULL);
out:
    cms_proc_destroy(s->proc);
    for (size_t i = 0; s->consumers && i < spec->nconsumers; i++)
        cms_consumer_destroy(s->consumers[i].c);
    free(s->consumers);
    cms_cmd_destroy(s->cmd);
    cms_auth_destroy(s->auth);
    cms_outbox_destroy(s->outbox);
    cms_http_destroy(s->http);
    cms_nats_destroy(s->nats);
    cms_pg_destroy(s->pg);
    cms_config_destroy(s->cfg);
    free(s->options);
    free(s);
    /* nats.c's own threads and globals, once the connection is gone; waiting
     * for its threads, so that none still runs while the process exits */
    (void)nats_CloseAndWait(5000);
    return code;
}
