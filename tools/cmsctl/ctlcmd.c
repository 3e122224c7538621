/* Commands to the services from cmsctl; see ctlcmd.h. */
#include "ctlcmd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apikey.h"
#include "backoff.h"
#include "cli.h"
#include "cmd.h"
#include "ctlnats.h"
#include "uuid.h"

#define DEFAULT_FILE "/.config/cms/credentials"
#define PREFIX_MAX 200
#define SERVICE_MAX 64
#define SUBJECT_MAX 400
#define BACKOFF_FIRST_MS 200

/* ------------------------------------------------------------------------ */
/* the API key */

const char *cmsctl_cmd_key_strerror(cmsctl_cmd_key_err err)
{
    switch (err) {
#define CMSCTL_CMD_KEY_TEXT(name, text)                                                            \
    case name:                                                                                     \
        return text;
        CMSCTL_CMD_KEY_ERRORS(CMSCTL_CMD_KEY_TEXT)
#undef CMSCTL_CMD_KEY_TEXT
    }
    return "unknown error";
}

static void set_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
    if (why == NULL || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

/* A key travels in a header: printable ASCII, no blanks, bounded. */
static bool key_ok(const char *s, size_t len)
{
    if (len == 0 || len > CMSCTL_CMD_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return false;
    }
    return true;
}

/* The key line of a credentials file's text (NUL-terminated), trimmed, as
 * [*key, *key + *len). False if there is no line that is not blank or a
 * comment. */
static bool key_line(const char *text, const char **key, size_t *len)
{
    const char *p = text;
    while (*p != '\0') {
        const char *end = strchr(p, '\n');
        if (end == NULL)
            end = p + strlen(p);
        const char *next = *end == '\n' ? end + 1 : end;
        while (p < end && is_blank(*p))
            p++;
        while (end > p && is_blank(end[-1]))
            end--;
        if (p == end || *p == '#') {
            p = next;
            continue;
        }
        static const char name[] = "api_key";
        size_t n = sizeof name - 1;
        if ((size_t)(end - p) > n && memcmp(p, name, n) == 0) {
            const char *q = p + n;
            while (q < end && is_blank(*q))
                q++;
            if (q < end && *q == '=') {
                q++;
                while (q < end && is_blank(*q))
                    q++;
                p = q;
            }
        }
        *key = p;
        *len = (size_t)(end - p);
        return true;
    }
    return false;
}

/* Reads the key from path. missing_ok: a file that does not exist is
 * CMSCTL_CMD_KEY_ENONE (the default file is optional) rather than EREAD. */
static cmsctl_cmd_key_err key_from_file(const char *path, const char *what, bool missing_ok,
                                        char out[CMSCTL_CMD_KEY_MAX + 1], char *why, size_t whylen)
{
    cmsctl_cmd_key_err err = CMSCTL_CMD_KEY_EREAD;
    char reason[512];
    size_t len = 0;
    char *buf = malloc(CMSCTL_CMD_KEY_FILE_MAX + 1);
    if (buf == NULL) {
        set_why(why, whylen, "out of memory reading %s", path);
        goto out;
    }
    switch (cms_apikey_read_private_file(path, buf, CMSCTL_CMD_KEY_FILE_MAX, &len, reason,
                                         sizeof reason)) {
    case CMS_APIKEY_FILE_OK:
        break;
    case CMS_APIKEY_FILE_MISSING:
        if (missing_ok) {
            err = CMSCTL_CMD_KEY_ENONE;
            goto out;
        }
        set_why(why, whylen, "%s %s", what, reason);
        goto out;
    case CMS_APIKEY_FILE_UNSAFE:
        err = CMSCTL_CMD_KEY_EUNSAFE;
        set_why(why, whylen, "%s %s", what, reason);
        goto out;
    case CMS_APIKEY_FILE_EREAD:
        set_why(why, whylen, "%s %s", what, reason);
        goto out;
    }
    if (memchr(buf, '\0', len) != NULL) {
        err = CMSCTL_CMD_KEY_EFORMAT;
        set_why(why, whylen, "%s %s is not a text file", what, path);
        goto out;
    }
    const char *key = NULL;
    size_t keylen = 0;
    if (!key_line(buf, &key, &keylen)) {
        err = CMSCTL_CMD_KEY_EFORMAT;
        set_why(why, whylen, "%s %s holds no key (only blank lines and # comments)", what, path);
        goto out;
    }
    if (!key_ok(key, keylen)) {
        err = CMSCTL_CMD_KEY_EFORMAT;
        set_why(why, whylen,
                "the first line of %s %s that is not a comment is not an API key: want the key "
                "alone, or api_key = <key> (1 to %d printable characters, no spaces)",
                what, path, CMSCTL_CMD_KEY_MAX);
        goto out;
    }
    memcpy(out, key, keylen);
    out[keylen] = '\0';
    err = CMSCTL_CMD_KEY_OK;
out:
    if (buf != NULL) {
        sodium_memzero(buf, CMSCTL_CMD_KEY_FILE_MAX + 1);
        free(buf);
    }
    return err;
}

cmsctl_cmd_key_sources cmsctl_cmd_key_sources_from_env(void)
{
    cmsctl_cmd_key_sources s = {
        .env_key = getenv("CMS_API_KEY"),
        .file = getenv("CMS_CREDENTIALS_FILE"),
        .home = getenv("HOME"),
    };
    return s;
}

cmsctl_cmd_key_err cmsctl_cmd_key_load(const cmsctl_cmd_key_sources *src,
                                       char out[CMSCTL_CMD_KEY_MAX + 1], char *why, size_t whylen)
{
    cmsctl_cmd_key_err err = CMSCTL_CMD_KEY_ENONE;
    char path[4096];
    if (src->env_key != NULL && src->env_key[0] != '\0') {
        size_t n = strlen(src->env_key);
        /* trailing blanks and newlines creep in from $(cat file) and editors */
        while (n > 0 && (is_blank(src->env_key[n - 1]) || src->env_key[n - 1] == '\n'))
            n--;
        if (!key_ok(src->env_key, n)) {
            err = CMSCTL_CMD_KEY_EFORMAT;
            set_why(why, whylen,
                    "CMS_API_KEY is not an API key: want 1 to %d printable characters, no spaces",
                    CMSCTL_CMD_KEY_MAX);
            goto out;
        }
        memcpy(out, src->env_key, n);
        out[n] = '\0';
        err = CMSCTL_CMD_KEY_OK;
        goto out;
    }
    if (src->file != NULL && src->file[0] != '\0') {
        err = key_from_file(src->file, "CMS_CREDENTIALS_FILE", false, out, why, whylen);
        goto out;
    }
    if (src->home == NULL || src->home[0] == '\0') {
        set_why(why, whylen,
                "no API key: set CMS_API_KEY, or CMS_CREDENTIALS_FILE to a file holding it "
                "(~/.config/cms/credentials was not looked at: HOME is not set)");
        goto out;
    }
    int n = snprintf(path, sizeof path, "%s%s", src->home, DEFAULT_FILE);
    if (n < 0 || (size_t)n >= sizeof path) {
        set_why(why, whylen,
                "no API key: set CMS_API_KEY or CMS_CREDENTIALS_FILE (HOME is too "
                "long to look in ~/.config/cms/credentials)");
        goto out;
    }
    err = key_from_file(path, "credentials file", true, out, why, whylen);
    if (err == CMSCTL_CMD_KEY_ENONE)
        set_why(why, whylen,
                "no API key: CMS_API_KEY and CMS_CREDENTIALS_FILE are not set and %s does not "
                "exist; set one of them, or put the key in that file (mode 600)",
                path);
out:
    return err;
}

/* ------------------------------------------------------------------------ */
/* replies */

const char *cmsctl_cmd_reply_strerror(cmsctl_cmd_reply_err err)
{
    switch (err) {
#define CMSCTL_CMD_REPLY_TEXT(name, text)                                                          \
    case name:                                                                                     \
        return text;
        CMSCTL_CMD_REPLY_ERRORS(CMSCTL_CMD_REPLY_TEXT)
#undef CMSCTL_CMD_REPLY_TEXT
    }
    return "unknown error";
}

/* Copies text from the wire for a terminal: control characters (which could
 * move the cursor or recolour the screen) become '?'; UTF-8 passes. */
static void copy_printable(char *dst, size_t dstlen, const char *src)
{
    size_t i = 0;
    for (; src != NULL && src[i] != '\0' && i + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    dst[i] = '\0';
}

cmsctl_cmd_reply_err cmsctl_cmd_reply_decode(const uint8_t *data, size_t len,
                                             const ProtobufCMessageDescriptor *rdesc,
                                             ProtobufCMessage **out, cmsctl_cmd_error *error)
{
    cmsctl_cmd_reply_err err = CMSCTL_CMD_REPLY_EDECODE;
    Cms__V1__Reply *r = cms__v1__reply__unpack(NULL, len, data);
    if (r == NULL)
        goto out;
    switch (r->outcome_case) {
    case CMS__V1__REPLY__OUTCOME_RESULT: {
        ProtobufCMessage *m = protobuf_c_message_unpack(rdesc, NULL, r->result.len, r->result.data);
        if (r->result.data != NULL)
            sodium_memzero(r->result.data, r->result.len);
        if (m == NULL) {
            err = CMSCTL_CMD_REPLY_ERESULT;
            goto out;
        }
        *out = m;
        err = CMSCTL_CMD_REPLY_OK;
        break;
    }
    case CMS__V1__REPLY__OUTCOME_ERROR:
        if (r->error == NULL || r->error->code == CMS__V1__ERROR_CODE__UNSPECIFIED)
            goto out;
        error->code = (int)r->error->code;
        copy_printable(error->field, sizeof error->field, r->error->field);
        copy_printable(error->message, sizeof error->message, r->error->message);
        err = CMSCTL_CMD_REPLY_ERROR;
        break;
    case CMS__V1__REPLY__OUTCOME__NOT_SET:
    case _CMS__V1__REPLY__OUTCOME__CASE_IS_INT_SIZE:
        break;
    }
out:
    if (r != NULL)
        cms__v1__reply__free_unpacked(r, NULL);
    return err;
}

const char *cmsctl_cmd_code_name(int code, char buf[24])
{
    /* the names of command.proto; a code this build does not know, by number */
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&cms__v1__error_code__descriptor, code);
    if (v != NULL && code != CMS__V1__ERROR_CODE__UNSPECIFIED)
        return v->name;
    snprintf(buf, 24, "ERROR_%d", code);
    return buf;
}

int cmsctl_cmd_error_print(const char *prog, const cmsctl_cmd_error *error)
{
    char buf[24];
    const char *name = cmsctl_cmd_code_name(error->code, buf);
    if (error->field[0] != '\0')
        return cmsctl_fail(prog, "%s (%s): %s", name, error->field, error->message);
    return cmsctl_fail(prog, "%s: %s", name, error->message);
}

/* ------------------------------------------------------------------------ */
/* the client */

struct cmsctl_cmd {
    const char *prog;
    natsConnection *nc;
    char prefix[PREFIX_MAX + 1];
    char service[SERVICE_MAX + 1];
    int64_t timeout_ms;
    /* "Bearer <key>": the only copy of the key, wiped on destroy */
    char auth[CMSCTL_CMD_KEY_MAX + 8];
};

/* A subject root: dot-separated tokens of printable characters, without
 * the wildcards '*' and '>'. */
static bool prefix_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > PREFIX_MAX || p[0] == '.' || p[n - 1] == '.' || strstr(p, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '*' || ch == '>')
            return false;
    }
    return true;
}

int cmsctl_cmd_open(const char *prog, const cms_config *cfg, const char *service, cmsctl_cmd **out)
{
    int status = CMSCTL_EXIT_FAILED;
    cmsctl_cmd *c = NULL;
    char key[CMSCTL_CMD_KEY_MAX + 1];
    char why[1024];
    int64_t timeout_ms = 0;
    const char *prefix = cms_config_str(cfg, "command-prefix");
    if (!cmsctl_duration_arg(prog, cfg, "timeout", 1, CMSCTL_TIMEOUT_MAX_MS, &timeout_ms)) {
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    if (prefix == NULL || !prefix_ok(prefix)) {
        status = cmsctl_usage(prog,
                              "--command-prefix (CMS_COMMAND_PREFIX) \"%s\" is not a subject root: "
                              "want dot-separated tokens such as cms.cmd, without spaces, * or >",
                              prefix ? prefix : "");
        goto out;
    }
    cmsctl_cmd_key_sources src = cmsctl_cmd_key_sources_from_env();
    if (cmsctl_cmd_key_load(&src, key, why, sizeof why) != CMSCTL_CMD_KEY_OK) {
        /* not cmsctl_usage: its "try --help" would bury where the key is looked for */
        fprintf(stderr, "%s: %s\n", prog, why);
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    if (sodium_init() < 0) {
        status = cmsctl_fail(prog, "libsodium failed to initialise");
        goto out;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        status = cmsctl_fail(prog, "out of memory");
        goto out;
    }
    c->prog = prog;
    c->timeout_ms = timeout_ms;
    snprintf(c->prefix, sizeof c->prefix, "%s", prefix);
    snprintf(c->service, sizeof c->service, "%s", service);
    snprintf(c->auth, sizeof c->auth, "Bearer %s", key);
    status = cmsctl_nats_connect(prog, cfg, timeout_ms, &c->nc);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    *out = c;
    c = NULL;
out:
    sodium_memzero(key, sizeof key);
    cmsctl_cmd_destroy(c);
    return status;
}

void cmsctl_cmd_destroy(cmsctl_cmd *c)
{
    if (c == NULL)
        return;
    natsConnection_Destroy(c->nc);
    sodium_memzero(c->auth, sizeof c->auth);
    free(c);
}

/* Waits before resend n (1, 2, ...): the common backoff from
 * BACKOFF_FIRST_MS, jittered so that clients that failed together do not
 * come back together. */
static void backoff(int n)
{
    uint64_t ms = cms_backoff_delay(2 * BACKOFF_FIRST_MS, 32 * BACKOFF_FIRST_MS, (unsigned)(n - 1));
    struct timespec t = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR && !cmsctl_interrupted())
        ;
}

static natsStatus request_once(cmsctl_cmd *c, const char *subject, const uint8_t *body, size_t len,
                               const char *request_id, natsMsg **rep)
{
    natsMsg *m = NULL;
    natsStatus st = natsMsg_Create(&m, subject, NULL, (const char *)body, (int)len);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Authorization", c->auth);
    if (st == NATS_OK && request_id != NULL)
        st = natsMsgHeader_Set(m, CMS_CMD_REQUEST_ID_HEADER, request_id);
    if (st == NATS_OK)
        st = natsConnection_RequestMsg(rep, c->nc, m, c->timeout_ms);
    natsMsg_Destroy(m);
    return st;
}

int cmsctl_cmd_call(cmsctl_cmd *c, const char *verb, cmsctl_cmd_kind kind,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                    ProtobufCMessage **out)
{
    int status = CMSCTL_EXIT_FAILED;
    uint8_t *body = NULL;
    size_t len = 0;
    natsMsg *rep = NULL;
    char subject[SUBJECT_MAX];
    char request_id[CMS_UUID_STRLEN + 1];
    const char *rid = NULL;
    int n = snprintf(subject, sizeof subject, "%s.%s.%s", c->prefix, c->service, verb);
    if (n < 0 || (size_t)n >= sizeof subject) {
        status = cmsctl_fail(c->prog, "subject for %s.%s is too long", c->service, verb);
        goto out;
    }
    len = protobuf_c_message_get_packed_size(req);
    if (len > INT32_MAX) {
        status = cmsctl_fail(c->prog, "request too large (%zu bytes)", len);
        goto out;
    }
    body = malloc(len > 0 ? len : 1);
    if (body == NULL) {
        status = cmsctl_fail(c->prog, "out of memory");
        goto out;
    }
    protobuf_c_message_pack(req, body);
    int attempts = 1;
    if (kind == CMSCTL_CMD_WRITE) {
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, request_id);
        rid = request_id;
        attempts += CMSCTL_CMD_RETRIES;
    }
    natsStatus st = NATS_OK;
    int tried = 0;
    while (tried < attempts) {
        if (tried > 0)
            backoff(tried);
        tried++;
        st = request_once(c, subject, body, len, rid, &rep);
        if (st != NATS_TIMEOUT && st != NATS_NO_RESPONDERS)
            break;
        if (cmsctl_interrupted())
            break;
    }
    char times[96] = "";
    if (tried > 1)
        snprintf(times, sizeof times, " (%d attempts with request id %s)", tried, rid);
    if (st == NATS_TIMEOUT) {
        char wait[32];
        status = cmsctl_fail(c->prog,
                             "no reply on %s within %s (--timeout)%s: is cms-%s running and "
                             "healthy?%s",
                             subject, cms_config_duration_format(c->timeout_ms, wait, sizeof wait),
                             times, c->service,
                             kind == CMSCTL_CMD_WRITE
                                 ? " The command may have been done: check before running it again"
                                 : "");
        goto out;
    }
    if (st == NATS_NO_RESPONDERS) {
        status = cmsctl_fail(c->prog,
                             "nothing answers on %s%s: is cms-%s running, with the same command "
                             "prefix (--command-prefix, CMS_COMMAND_PREFIX)?",
                             subject, times, c->service);
        goto out;
    }
    if (st != NATS_OK) {
        char what[SUBJECT_MAX + 32];
        snprintf(what, sizeof what, "request on %s failed", subject);
        status = cmsctl_nats_fail(c->prog, what, st);
        goto out;
    }
    cmsctl_cmd_error error = {.code = 0};
    int dlen = natsMsg_GetDataLength(rep);
    const uint8_t *data = (const uint8_t *)natsMsg_GetData(rep);
    cmsctl_cmd_reply_err rerr =
        cmsctl_cmd_reply_decode(data, dlen > 0 ? (size_t)dlen : 0, rdesc, out, &error);
    /* the reply may carry a secret (an issued key): keep no copy but *out */
    if (data != NULL && dlen > 0)
        sodium_memzero((void *)data, (size_t)dlen);
    switch (rerr) {
    case CMSCTL_CMD_REPLY_OK:
        status = CMSCTL_EXIT_OK;
        break;
    case CMSCTL_CMD_REPLY_ERROR:
        status = cmsctl_cmd_error_print(c->prog, &error);
        break;
    case CMSCTL_CMD_REPLY_EDECODE:
    case CMSCTL_CMD_REPLY_ERESULT:
        status = cmsctl_fail(c->prog, "bad reply on %s (%d bytes): %s%s%s", subject, dlen,
                             cmsctl_cmd_reply_strerror(rerr),
                             rerr == CMSCTL_CMD_REPLY_ERESULT ? " " : "",
                             rerr == CMSCTL_CMD_REPLY_ERESULT ? rdesc->name : "");
        break;
    }
out:
    natsMsg_Destroy(rep);
    if (body != NULL) /* it may hold a key (whoami) */
        sodium_memzero(body, len > 0 ? len : 1);
    free(body);
    return status;
}

int cmsctl_cmd_whoami(cmsctl_cmd *c, Cms__V1__Principal **out)
{
    Cms__V1__Authenticate req = CMS__V1__AUTHENTICATE__INIT;
    req.api_key = c->auth + strlen("Bearer ");
    return cmsctl_cmd_call(c, "authenticate", CMSCTL_CMD_READ, &req.base,
                           &cms__v1__principal__descriptor, (ProtobufCMessage **)out);
}

/* ------------------------------------------------------------------------ */
/* times */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar
 * (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

const char *cmsctl_cmd_time_format(int64_t us, bool micro, char out[CMSCTL_CMD_TIME_MAX])
{
    out[0] = '\0';
    if (us == 0)
        return out;
    int64_t secs = floor_div(us, 1000000);
    int64_t frac = us - secs * 1000000;
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return out;
    char date[32];
    if (strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        return out;
    if (micro)
        snprintf(out, CMSCTL_CMD_TIME_MAX, "%s.%06" PRId64 "Z", date, frac);
    else
        snprintf(out, CMSCTL_CMD_TIME_MAX, "%sZ", date);
    return out;
}

/* n decimal digits at *p as an int; advances *p. */
static bool digits(const char **p, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9')
            return false;
        x = x * 10 + (ch - '0');
    }
    *p += n;
    *v = x;
    return true;
}

static bool expect(const char **p, char ch)
{
    if (**p != ch)
        return false;
    (*p)++;
    return true;
}

bool cmsctl_cmd_time_parse(const char *text, int64_t *us)
{
    const char *p = text;
    int y, mo, d, h, mi, s;
    if (!digits(&p, 4, &y) || !expect(&p, '-') || !digits(&p, 2, &mo) || !expect(&p, '-') ||
        !digits(&p, 2, &d))
        return false;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return false;
    p++;
    if (!digits(&p, 2, &h) || !expect(&p, ':') || !digits(&p, 2, &mi) || !expect(&p, ':') ||
        !digits(&p, 2, &s))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60)
        return false;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        for (; *p >= '0' && *p <= '9'; p++, nd++) {
            if (nd < 6)
                frac = frac * 10 + (*p - '0');
        }
        if (nd == 0)
            return false;
        for (; nd < 6; nd++)
            frac *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int oh, om;
        p++;
        if (!digits(&p, 2, &oh) || !expect(&p, ':') || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    /* a leap second (:60) is taken as the next second, as the wire has none */
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset_s;
    *us = secs * 1000000 + frac;
    return true;
}
