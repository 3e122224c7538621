/* cmsctl record: captures live messages from a core NATS subscription into
 * a .pbs file, one record per message payload (headers are not kept).
 *
 * It stops after --count messages, after --duration, or on SIGINT/SIGTERM,
 * and then reports how many it wrote. Once the subscription is in place on
 * the server it says so on stderr ("recording ..."), so a script can start
 * publishing from that moment without losing the first messages. */
#include <errno.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ctlnats.h"
#include "ctlout.h"
#include "pbs.h"
#include "verbs.h"

#define PROG "cmsctl record"
#define SLICE_MS 200 /* longest wait before looking at the signal flag and the clock */
#define PENDING_MSGS 1000000
#define PENDING_BYTES (1024 * 1024 * 1024)

static const cms_option options[] = {
    {"out", NULL, CMS_OPT_STRING, NULL, "the .pbs file to write (- for stdout)", false, true},
    {"subject", NULL, CMS_OPT_STRING, "cms.events.>", "subject to subscribe to (wildcards allowed)",
     false, false},
    {"count", NULL, CMS_OPT_INT, "0", "stop after this many messages (0: no limit)", false, false},
    {"duration", NULL, CMS_OPT_DURATION, "0", "stop after recording this long in all (0: no limit)",
     CMS_OPT_PUBLIC, false},
    CMSCTL_NATS_OPTIONS,
    {"timeout", NULL, CMS_OPT_DURATION, "5s", "longest wait to connect to NATS (1ms to 24d)",
     CMS_OPT_PUBLIC, false},
    CMSCTL_OUT_OPTIONS,
};

static const char usage_tail[] =
    "\n\n"
    "Subscribes (core NATS) and appends each message's payload to --out as a .pbs record.\n"
    "Stops after --count messages, after --duration, or on Ctrl-C, then prints how many\n"
    "it recorded (one object with -o json or ndjson; on stderr when the records go to\n"
    "stdout). \"recording ...\" on stderr means the subscription is active.\n"
    "Exit status: 0 done, 1 failed (or messages were dropped), 2 usage error.";

int cmsctl_record_main(int argc, char **argv)
{
    int status = CMSCTL_EXIT_FAILED;
    cms_config *cfg = NULL;
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    FILE *out = NULL;
    bool to_stdout = false;
    int64_t count = 0, timeout_ms = 0, connect_ms = 0;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    int rc = cmsctl_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                          "capture live events into a .pbs file", usage_tail, &cfg);
    if (rc != CMSCTL_EXIT_OK)
        return rc == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : rc;
    if (cms_config_npositional(cfg) > 0) {
        status = cmsctl_usage(PROG, "unexpected argument \"%s\"", cms_config_positional(cfg, 0));
        goto out;
    }
    if ((status = cmsctl_out_format_get(PROG, cfg, &fmt)) != CMSCTL_EXIT_OK)
        goto out;
    status = CMSCTL_EXIT_FAILED;
    if (!cmsctl_int_arg(PROG, cfg, "count", 0, INT64_MAX, &count) ||
        !cmsctl_duration_arg(PROG, cfg, "duration", 0, INT64_MAX / 1000, &timeout_ms) ||
        !cmsctl_duration_arg(PROG, cfg, "timeout", 1, CMSCTL_TIMEOUT_MAX_MS, &connect_ms)) {
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    const char *subject = cms_config_str(cfg, "subject");
    const char *path = cms_config_str(cfg, "out");
    if (*subject == '\0' || strpbrk(subject, " \t\r\n") != NULL) {
        status = cmsctl_usage(PROG, "--subject \"%s\" is not a NATS subject", subject);
        goto out;
    }
    cmsctl_catch_signals();
    if ((status = cmsctl_nats_connect(PROG, cfg, connect_ms, &nc)) != CMSCTL_EXIT_OK)
        goto out;
    status = CMSCTL_EXIT_FAILED;
    to_stdout = strcmp(path, "-") == 0;
    out = to_stdout ? stdout : fopen(path, "wb");
    if (out == NULL) {
        status = cmsctl_fail(PROG, "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    natsStatus st = natsConnection_SubscribeSync(&sub, nc, subject);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(sub, PENDING_MSGS, PENDING_BYTES);
    /* the server has the subscription once it answers the flush's PING */
    if (st == NATS_OK)
        st = natsConnection_FlushTimeout(nc, connect_ms);
    if (st != NATS_OK) {
        status = cmsctl_nats_fail(PROG, "cannot subscribe", st);
        goto out;
    }
    fprintf(stderr, "%s: recording %s to %s\n", PROG, subject, path);
    fflush(stderr);

    uint64_t start = cmsctl_mono_us();
    uint64_t deadline = timeout_ms > 0 ? start + (uint64_t)timeout_ms * 1000 : 0;
    int64_t n = 0;
    bool stopped_by_time = false;
    while ((count == 0 || n < count) && !cmsctl_interrupted()) {
        int64_t wait = SLICE_MS;
        if (deadline != 0) {
            uint64_t now = cmsctl_mono_us();
            if (now >= deadline) {
                stopped_by_time = true;
                break;
            }
            if ((int64_t)(deadline - now) / 1000 + 1 < wait)
                wait = (int64_t)(deadline - now) / 1000 + 1;
        }
        natsMsg *m = NULL;
        st = natsSubscription_NextMsg(&m, sub, wait);
        if (st == NATS_TIMEOUT || st == NATS_SLOW_CONSUMER)
            continue; /* drops are counted by the subscription and reported below */
        if (st != NATS_OK) {
            status = cmsctl_nats_fail(PROG, "receiving", st);
            goto out;
        }
        int wrc = cms_pbs_write(out, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        natsMsg_Destroy(m);
        if (wrc != CMS_PBS_OK) {
            status = cmsctl_fail(PROG, "writing %s: %s", path, strerror(errno));
            goto out;
        }
        n++;
    }
    (void)natsSubscription_Unsubscribe(sub);
    if (fflush(out) != 0) {
        status = cmsctl_fail(PROG, "writing %s: %s", path, strerror(errno));
        goto out;
    }
    if (!to_stdout) {
        FILE *f = out;
        out = NULL;
        if (fclose(f) != 0) {
            status = cmsctl_fail(PROG, "writing %s: %s", path, strerror(errno));
            goto out;
        }
    }
    int64_t dropped = 0;
    (void)natsSubscription_GetDropped(sub, &dropped);
    FILE *sum = to_stdout ? stderr : stdout;
    double secs = (double)(cmsctl_mono_us() - start) / 1e6;
    const char *why = cmsctl_interrupted() ? "interrupted"
                      : stopped_by_time    ? "duration"
                                           : "count reached";
    if (fmt == CMSCTL_OUT_TABLE) {
        fprintf(sum, "recorded %lld messages from %s to %s in %.3f s (%s)\n", (long long)n, subject,
                path, secs, why);
    } else {
        json_t *o = json_object();
        if (o != NULL) {
            json_object_set_new(o, "recorded", json_integer(n));
            json_object_set_new(o, "subject", cmsctl_out_str(subject));
            json_object_set_new(o, "out", cmsctl_out_str(path));
            json_object_set_new(o, "elapsed_seconds", json_real(secs));
            json_object_set_new(o, "stopped_by", json_string(why));
            json_object_set_new(o, "dropped", json_integer(dropped));
        }
        if ((status = cmsctl_out_emit_to(PROG, fmt, sum, o, NULL)) != CMSCTL_EXIT_OK)
            goto out;
        status = CMSCTL_EXIT_FAILED;
    }
    if (dropped > 0) {
        status = cmsctl_fail(PROG,
                             "%lld messages were dropped because writing fell behind; record "
                             "to a faster disk or a narrower --subject",
                             (long long)dropped);
        goto out;
    }
    status = CMSCTL_EXIT_OK;
out:
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    if (out != NULL && !to_stdout)
        fclose(out);
    cms_config_destroy(cfg);
    return status;
}
