/* cms-worker: trains the jobs cms-training dispatches, by DP-SGD exactly as
 * its accountant assumes (services/worker/dpsgd.h), and tells it how they
 * go. It owns nothing and keeps nothing: a CPU-bound process with one
 * synchronous NATS connection, as its own machine or enclave identity.
 *
 * The protocol (proto/cms/v1/training.proto):
 *
 *   1. Pull one cms.v1.TrainingDispatch at a time from the durable
 *      "workers" of the work-queue stream CMS_WORK (subject
 *      cms.work.training; explicit ack, 30 s ack wait), which cms-migrate
 *      provisions: the worker binds it, never creates it. One dispatch per
 *      attempt of a job. An undecodable one, or one naming no job, is
 *      logged and terminated.
 *   2. Check it (dispatch.h): the config's training.sampler, if given, must
 *      be "poisson"; the architecture logistic_regression; the dataset a
 *      plain name; the privacy numbers sane. A refused dispatch is reported
 *      FAILED with the reason, then acked.
 *   3. Subscribe to its control_subject (cms.control.training.<job id>):
 *      a cms.v1.StopJob for this attempt (or attempt 0) sets a flag that
 *      the training loop reads before every step, so a job stops within
 *      one step.
 *   4. Report STARTED: a cms.v1.WorkerReport request on
 *      <command prefix>.training.report with "Authorization: Bearer <API
 *      key>" and a fresh Cms-Request-Id (progress reports carry none: a
 *      repeat changes nothing), answered by a cms.v1.Reply whose
 *      result is a cms.v1.ReportReply. Accepted: ack the dispatch and run
 *      it. Refused (the job is no longer pending, a stale attempt, ...):
 *      ack it and move on; refused with UNAVAILABLE or INTERNAL, or with
 *      PERMISSION_DENIED (this worker's key), or no reply at all (timeout,
 *      no responders): nak it with a delay of 5 s, for this or another
 *      worker to try again.
 *   5. Load <data dir>/<dataset>.csv (dataset.h); its rows must number
 *      dataset_size. Train min(steps, max_steps) steps, fewer if a reply's
 *      max_steps says so. At least every report interval (ours, or the
 *      dispatch's report_interval_ms when shorter), report PROGRESS: this
 *      attempt's steps and examples, and the loss and accuracy on (up to
 *      10000 rows of) the training set. A reply with stop ends the job.
 *   6. The last report: COMPLETED with the figures on the whole training
 *      set; STOPPED when told to stop; FAILED with the reason (no such
 *      dataset, a bad one, a model that diverged). It is sent again with
 *      the same request id, with backoff, until cms-training answers,
 *      for at most --final-report-timeout.
 *
 * SIGTERM or SIGINT: the job in hand stops after its current step and the
 * worker exits 0 without a final report, after one last PROGRESS report
 * (so that cms-training's count of the steps run, and of the budget spent,
 * is exact): cms-training presumes the attempt lost and runs the job again
 * as a new attempt. A dispatch not yet accepted is nak'd at once for
 * another worker. A second signal exits at once.
 *
 * The API key is read from a file (mode 600), never from the command line,
 * and never logged. CMS_WORKER_TEST_SEED makes every job's randomness
 * follow a known seed: for tests only, since noise that can be recomputed
 * protects nothing. */
#include "apikey.h"
#include "bus.h"
#include "config.h"
#include "dpsgd.h"
#include "log.h"
#include "natsauth.h"
#include "probes.h"
#include "worker.h"

#include <nats/nats.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define PROG "cms-worker"
#define KEY_FILE_MAX 4096
#define FETCH_TIMEOUT_MS                                                                           \
    1000 /* the life of one pull request: how soon a stop is seen when idle                        \
          */

// clang-format off
static const cms_option options[] = {
  {"nats-url", "CMS_NATS_URL", CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated", CMS_OPT_PASSWORD, false},
  CMS_OPTIONS_NATS_SECURITY("", ""),
  {"log-level", "CMS_LOG_LEVEL", CMS_OPT_STRING, "info", "debug, info, warn or error", CMS_OPT_PUBLIC, false},
  {"command-prefix", "CMS_COMMAND_PREFIX", CMS_OPT_STRING, "cms.cmd", "subject root of commands: reports go to <prefix>.training.report", CMS_OPT_PUBLIC, false},
  {"api-key-file", "CMS_API_KEY_FILE", CMS_OPT_STRING, NULL, "file (mode 600) of this worker's API key, a machine or enclave identity's, sent with every report", CMS_OPT_PUBLIC, true},
  {"data-dir", "CMS_DATA_DIR", CMS_OPT_STRING, NULL, "directory of the datasets: a dispatch's dataset D is the CSV file <dir>/D.csv", CMS_OPT_PUBLIC, true},
  {"report-interval", "CMS_REPORT_INTERVAL", CMS_OPT_DURATION, "1s", "longest time between progress reports; a dispatch asking for less wins (100ms to 1h)", CMS_OPT_PUBLIC, false},
  {"report-timeout", "CMS_REPORT_TIMEOUT", CMS_OPT_DURATION, "5s", "longest wait for the reply to one report (100ms to 1m)", CMS_OPT_PUBLIC, false},
  {"final-report-timeout", "CMS_FINAL_REPORT_TIMEOUT", CMS_OPT_DURATION, "30s", "how long a job's last report (completed, failed, stopped) is sent again until cms-training answers (1s to 10m)", CMS_OPT_PUBLIC, false},
  {"work-durable", "CMS_WORK_DURABLE", CMS_OPT_STRING, CMS_BUS_WORKERS_DURABLE, "the durable of CMS_WORK that dispatches are pulled from (cms-migrate provisions it; tests make their own)", CMS_OPT_PUBLIC, false},
  {"http-addr", "CMS_HTTP_ADDR", CMS_OPT_STRING, NULL, "address of /healthz, /readyz (200 while bound to the durable and connected) and /metrics (numeric HOST:PORT); unset: none", CMS_OPT_PUBLIC, false},
  {"once", NULL, CMS_OPT_BOOL, "false", "take one dispatch, then exit", CMS_OPT_PUBLIC, false},
  {"worker-test-seed", "CMS_WORKER_TEST_SEED", CMS_OPT_STRING, NULL, "FOR TESTS ONLY: 64 hex digits that seed every job's sampling and noise, so that runs repeat; whoever knows them can undo the noise, so a model trained so is not private", CMS_OPT_SECRET, false},
};
// clang-format on

/* ---- signals ---- */

static void on_signal(int sig)
{
    (void)sig;
    if (worker_stopping())
        _exit(1); /* the second: at once */
    worker_stop();
}

static bool signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    return sigaction(SIGTERM, &sa, NULL) == 0 && sigaction(SIGINT, &sa, NULL) == 0 &&
           sigaction(SIGPIPE, &ign, NULL) == 0;
}

/* ---- options ---- */

static bool duration_in(const cms_config *c, const char *name, int64_t min, int64_t max,
                        const char *range, int64_t *out)
{
    int64_t v = cms_config_duration_ms(c, name);
    if (v < min || v > max) {
        fprintf(stderr, PROG ": --%s must be %s; try --help\n", name, range);
        return false;
    }
    *out = v;
    return true;
}

/* The key alone on the file's first line (a trailing newline allowed). */
static bool load_key(const char *path, char key[CMS_APIKEY_LEN + 1])
{
    bool ok = false;
    char buf[KEY_FILE_MAX + 1], why[512];
    size_t len = 0;
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    if (cms_apikey_read_private_file(path, buf, KEY_FILE_MAX, &len, why, sizeof why) !=
        CMS_APIKEY_FILE_OK) {
        cms_log_error("the API key file cannot be used", "{s:s}", "why", why);
        goto out;
    }
    size_t n = strcspn(buf, "\r\n");
    if (!cms_apikey_parse(buf, n, &id, secret)) {
        cms_log_error("the API key file does not hold an API key on its first line (cms_<id>_"
                      "<secret>, as cms-identity issues them)",
                      "{s:s}", "file", path);
        goto out;
    }
    memcpy(key, buf, n);
    key[n] = '\0';
    ok = true;
out:
    sodium_memzero(buf, sizeof buf);
    sodium_memzero(secret, sizeof secret);
    return ok;
}

static bool parse_seed(const char *hex, uint8_t seed[DPSGD_SEED_BYTES])
{
    size_t n = 0;
    const char *end = NULL;
    return strlen(hex) == 2 * DPSGD_SEED_BYTES &&
           sodium_hex2bin(seed, DPSGD_SEED_BYTES, hex, strlen(hex), NULL, &n, &end) == 0 &&
           n == DPSGD_SEED_BYTES && *end == '\0';
}

static bool data_dir_ok(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        cms_log_error("--data-dir is not a directory", "{s:s}", "data_dir", dir);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    int code = 1;
    cms_config *cfg = NULL;
    worker *w = NULL;
    worker_probes *probes = NULL;
    char key[CMS_APIKEY_LEN + 1] = "";
    uint8_t seed[DPSGD_SEED_BYTES];
    switch (cms_config_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                             "trains the jobs cms-training dispatches (DP-SGD) and reports on "
                             "them",
                             NULL, &cfg)) {
    case CMS_CONFIG_OK:
        break;
    case CMS_CONFIG_EXIT_OK:
        return 0;
    case CMS_CONFIG_EXIT_USAGE:
        return 2;
    }
    cms_log_level level;
    if (!cms_log_level_parse(cms_config_str(cfg, "log-level"), &level)) {
        fprintf(stderr, PROG ": --log-level must be debug, info, warn or error; try --help\n");
        code = 2;
        goto out;
    }
    worker_options o;
    memset(&o, 0, sizeof o);
    if (!duration_in(cfg, "report-interval", 100, 3600000, "100ms to 1h", &o.report_interval_ms) ||
        !duration_in(cfg, "report-timeout", 100, 60000, "100ms to 1m", &o.report_timeout_ms) ||
        !duration_in(cfg, "final-report-timeout", 1000, 600000, "1s to 10m", &o.final_report_ms)) {
        code = 2;
        goto out;
    }
    const char *seed_hex = cms_config_str(cfg, "worker-test-seed");
    if (seed_hex != NULL && !parse_seed(seed_hex, seed)) {
        fprintf(stderr, PROG ": --worker-test-seed (CMS_WORKER_TEST_SEED) must be 64 hex "
                             "digits; try --help\n");
        code = 2;
        goto out;
    }
    cms_log_init("worker", level, NULL);
    cms_config_log(cfg);
    if (!cms_sodium_ready()) {
        cms_log_error("libsodium cannot start", NULL);
        goto out;
    }
    if (!data_dir_ok(cms_config_str(cfg, "data-dir")) ||
        !load_key(cms_config_str(cfg, "api-key-file"), key))
        goto out;
    o.nats_url = cms_config_str(cfg, "nats-url");
    cms_natsauth_from_config(cfg, &o.security);
    o.command_prefix = cms_config_str(cfg, "command-prefix");
    o.work_durable = cms_config_str(cfg, "work-durable");
    if (o.work_durable == NULL || o.work_durable[0] == '\0' || strlen(o.work_durable) > 64 ||
        strspn(o.work_durable,
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
            strlen(o.work_durable)) {
        fprintf(stderr, "cms-worker: --work-durable must be 1..64 of [A-Za-z0-9_-]; try --help\n");
        code = 2;
        goto out;
    }
    o.api_key = key;
    o.data_dir = cms_config_str(cfg, "data-dir");
    o.fetch_timeout_ms = FETCH_TIMEOUT_MS;
    o.once = cms_config_bool(cfg, "once");
    o.test_seed = seed_hex != NULL ? seed : NULL;
    worker_err err = worker_create(&o, &w);
    if (err != WORKER_OK) {
        cms_log_error("cms-worker cannot start", "{s:s}", "error", worker_strerror(err));
        goto out;
    }
    sodium_memzero(key, sizeof key);
    if (!signals_install()) {
        cms_log_error("cannot set up signal handling", NULL);
        goto out;
    }
    const char *http_addr = cms_config_str(cfg, "http-addr");
    if (http_addr != NULL && http_addr[0] != '\0') {
        int rc = worker_probes_start(http_addr, &probes);
        if (rc != 0) {
            cms_log_error("cannot serve HTTP: is --http-addr free and numeric (HOST:PORT)?",
                          "{s:s, s:s}", "addr", http_addr, "error", uv_strerror(rc));
            goto out;
        }
    }
    code = worker_run(w);
    cms_log_info("cms-worker stopped", "{s:i}", "exit", code);
out:
    sodium_memzero(key, sizeof key);
    sodium_memzero(seed, sizeof seed);
    worker_probes_stop(probes);
    worker_destroy(w);
    cms_config_destroy(cfg);
    /* nats.c's own threads, once the connection is gone */
    (void)nats_CloseAndWait(5000);
    return code;
}
