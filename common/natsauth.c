/* NATS credentials, inbox prefix and TLS; see natsauth.h. */
#include "natsauth.h"

#include "apikey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define JWT_BEGIN "-----BEGIN NATS USER JWT-----"
#define SEED_BEGIN "-----BEGIN USER NKEY SEED-----"
#define DEFAULT_PREFIX "_INBOX"

static const char *const err_names[] = {CMS_NATSAUTH_ERRORS(CMS_ENUM_TEXT)};

const char *cms_natsauth_strerror(cms_natsauth_err e)
{
    return cms_enum_text(err_names, CMS_NATSAUTH_NERRORS, e);
}

void cms_natsauth_creds_wipe(cms_natsauth_creds *c)
{
    if (c != NULL)
        cms_apikey_wipe(c, sizeof *c);
}

/* Whether text has line as one of its lines (a CR before the NL allowed). */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p != NULL; p = strstr(p + 1, line)) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\r' || p[n] == '\0'))
            return true;
    }
    return false;
}

/* The first line of a USER:PASSWORD file into out. */
static cms_natsauth_err parse_password(const char *path, const char *text, size_t len,
                                       cms_natsauth_creds *out, char *why, size_t whylen)
{
    static const char want[] = "want USER:PASSWORD on its first line, or a NATS .creds file";
    size_t line = strcspn(text, "\n");
    if (line > 0 && text[line - 1] == '\r')
        line--;
    if (len == 0 || line == 0) {
        snprintf(why, whylen, "%s is %s: %s", path, len == 0 ? "empty" : "blank on its first line",
                 want);
        return CMS_NATSAUTH_EFORMAT;
    }
    const char *colon = memchr(text, ':', line);
    if (colon == NULL) {
        snprintf(why, whylen, "%s: the first line has no ':': %s", path, want);
        return CMS_NATSAUTH_EFORMAT;
    }
    size_t ulen = (size_t)(colon - text), plen = line - ulen - 1;
    if (ulen == 0 || plen == 0) {
        snprintf(why, whylen, "%s: the %s is empty: %s", path, ulen == 0 ? "user" : "password",
                 want);
        return CMS_NATSAUTH_EFORMAT;
    }
    if (ulen > CMS_NATSAUTH_USER_MAX || plen > CMS_NATSAUTH_PASSWORD_MAX) {
        snprintf(why, whylen, "%s: the %s is longer than %d characters", path,
                 ulen > CMS_NATSAUTH_USER_MAX ? "user" : "password",
                 ulen > CMS_NATSAUTH_USER_MAX ? CMS_NATSAUTH_USER_MAX : CMS_NATSAUTH_PASSWORD_MAX);
        return CMS_NATSAUTH_EFORMAT;
    }
    for (size_t i = 0; i < line; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch < 0x20 || ch == 0x7f || (i < ulen && ch == ' ')) {
            snprintf(why, whylen, "%s: the %s holds a blank or control character", path,
                     i < ulen ? "user" : "password");
            return CMS_NATSAUTH_EFORMAT;
        }
    }
    out->kind = CMS_NATSAUTH_PASSWORD;
    memcpy(out->user, text, ulen);
    out->user[ulen] = '\0';
    memcpy(out->password, colon + 1, plen);
    out->password[plen] = '\0';
    return CMS_NATSAUTH_OK;
}

cms_natsauth_err cms_natsauth_creds_read(const char *path, cms_natsauth_creds *out, char *why,
                                         size_t whylen)
{
    cms_natsauth_err err = CMS_NATSAUTH_EREAD;
    char *buf = NULL;
    size_t len = 0;
    cms_natsauth_creds_wipe(out);
    if (path == NULL || *path == '\0') {
        snprintf(why, whylen, "no credentials file given");
        err = CMS_NATSAUTH_EINVAL;
        goto out;
    }
    buf = malloc(CMS_NATSAUTH_FILE_MAX + 1);
    if (buf == NULL) {
        snprintf(why, whylen, "%s: out of memory", path);
        err = CMS_NATSAUTH_ENOMEM;
        goto out;
    }
    switch (cms_apikey_read_private_file(path, buf, CMS_NATSAUTH_FILE_MAX, &len, why, whylen)) {
    case CMS_APIKEY_FILE_OK:
        break;
    case CMS_APIKEY_FILE_MISSING:
        err = CMS_NATSAUTH_EMISSING;
        goto out;
    case CMS_APIKEY_FILE_UNSAFE:
        err = CMS_NATSAUTH_EUNSAFE;
        goto out;
    case CMS_APIKEY_FILE_EREAD:
        err = CMS_NATSAUTH_EREAD;
        goto out;
    }
    if (memchr(buf, '\0', len) != NULL) {
        snprintf(why, whylen, "%s holds a NUL byte: not a credentials file", path);
        err = CMS_NATSAUTH_EFORMAT;
        goto out;
    }
    if (has_line(buf, JWT_BEGIN)) {
        if (!has_line(buf, SEED_BEGIN)) {
            snprintf(why, whylen,
                     "%s has a user JWT but no NKey seed (\"" SEED_BEGIN
                     "\"): a .creds file needs both",
                     path);
            err = CMS_NATSAUTH_EFORMAT;
            goto out;
        }
        out->kind = CMS_NATSAUTH_JWT;
        err = CMS_NATSAUTH_OK;
        goto out;
    }
    err = parse_password(path, buf, len, out, why, whylen);
out:
    if (buf != NULL) {
        cms_apikey_wipe(buf, CMS_NATSAUTH_FILE_MAX + 1);
        free(buf);
    }
    if (err != CMS_NATSAUTH_OK)
        cms_natsauth_creds_wipe(out);
    return err;
}

/* A subject without wildcards, blanks or empty tokens, as an inbox prefix must be. */
static bool prefix_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > CMS_NATSAUTH_PREFIX_MAX || p[0] == '.' || p[n - 1] == '.' ||
        strstr(p, "..") != NULL)
        return false;
    for (; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= ' ' || ch == 0x7f || ch == '*' || ch == '>')
            return false;
    }
    return true;
}

static bool wants_tls(const char *url, const cms_nats_security *s)
{
    if (s->tls || (s->ca_file && *s->ca_file) || (s->cert_file && *s->cert_file) ||
        (s->key_file && *s->key_file))
        return true;
    for (const char *p = url; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == ',')
            p++;
        if (strncasecmp(p, "tls://", 6) == 0)
            return true;
        p = strchr(p, ',');
    }
    return false;
}

/* why gets "what: nats.c's status: its last error". */
static cms_natsauth_err nats_failed(natsStatus st, const char *what, char *why, size_t whylen)
{
    const char *last = nats_GetLastError(NULL);
    snprintf(why, whylen, "%s: %s%s%s", what, natsStatus_GetText(st), last ? ": " : "",
             last ? last : "");
    return st == NATS_NO_MEMORY ? CMS_NATSAUTH_ENOMEM : CMS_NATSAUTH_ETLS;
}

static cms_natsauth_err apply_creds(natsOptions *no, const cms_nats_security *s,
                                    cms_natsauth_info *info, char *why, size_t whylen)
{
    cms_natsauth_creds c;
    cms_natsauth_err err = cms_natsauth_creds_read(s->creds_file, &c, why, whylen);
    natsStatus st = NATS_OK;
    if (err != CMS_NATSAUTH_OK)
        goto out;
    info->kind = c.kind;
    if (c.kind == CMS_NATSAUTH_JWT) {
        st = natsOptions_SetUserCredentialsFromFiles(no, s->creds_file, NULL);
    } else {
        snprintf(info->user, sizeof info->user, "%s", c.user);
        st = natsOptions_SetUserInfo(no, c.user, c.password);
    }
    if (st != NATS_OK) {
        err = nats_failed(st, s->creds_file, why, whylen);
        if (err == CMS_NATSAUTH_ETLS)
            err = CMS_NATSAUTH_EFORMAT;
        goto out;
    }
    if (c.kind == CMS_NATSAUTH_PASSWORD && (s->inbox_prefix == NULL || *s->inbox_prefix == '\0')) {
        int k =
            snprintf(info->inbox_prefix, sizeof info->inbox_prefix, DEFAULT_PREFIX ".%s", c.user);
        if (k < 0 || (size_t)k >= sizeof info->inbox_prefix || !prefix_ok(info->inbox_prefix) ||
            strchr(c.user, '.') != NULL) {
            snprintf(why, whylen,
                     "%s: the user name cannot be one token of an inbox subject (_INBOX.<USER>): "
                     "give --nats-inbox-prefix (CMS_NATS_INBOX_PREFIX)",
                     s->creds_file);
            err = CMS_NATSAUTH_EINVAL;
            goto out;
        }
    }
out:
    cms_natsauth_creds_wipe(&c);
    return err;
}

/* The client key must be private like a credentials file; nats.c reads it itself. */
static cms_natsauth_err check_key_file(const char *path, char *why, size_t whylen)
{
    char *buf = malloc(CMS_NATSAUTH_FILE_MAX + 1);
    size_t len = 0;
    if (buf == NULL) {
        snprintf(why, whylen, "%s: out of memory", path);
        return CMS_NATSAUTH_ENOMEM;
    }
    cms_apikey_file_err e =
        cms_apikey_read_private_file(path, buf, CMS_NATSAUTH_FILE_MAX, &len, why, whylen);
    cms_apikey_wipe(buf, CMS_NATSAUTH_FILE_MAX + 1);
    free(buf);
    return e == CMS_APIKEY_FILE_OK        ? CMS_NATSAUTH_OK
           : e == CMS_APIKEY_FILE_UNSAFE  ? CMS_NATSAUTH_EUNSAFE
           : e == CMS_APIKEY_FILE_MISSING ? CMS_NATSAUTH_EMISSING
                                          : CMS_NATSAUTH_EREAD;
}

static cms_natsauth_err apply_tls(natsOptions *no, const cms_nats_security *s, char *why,
                                  size_t whylen)
{
    bool cert = s->cert_file && *s->cert_file, key = s->key_file && *s->key_file;
    if (cert != key) {
        snprintf(why, whylen, "--nats-cert and --nats-key go together: give both or neither");
        return CMS_NATSAUTH_EINVAL;
    }
    natsStatus st = natsOptions_SetSecure(no, true);
    if (st != NATS_OK)
        return nats_failed(st, "cannot require TLS", why, whylen);
    if (s->ca_file && *s->ca_file) {
        st = natsOptions_LoadCATrustedCertificates(no, s->ca_file);
        if (st != NATS_OK) {
            char what[600];
            snprintf(what, sizeof what, "%s: cannot load the CA certificates (PEM)", s->ca_file);
            return nats_failed(st, what, why, whylen);
        }
    }
    if (cert) {
        cms_natsauth_err err = check_key_file(s->key_file, why, whylen);
        if (err != CMS_NATSAUTH_OK)
            return err;
        st = natsOptions_LoadCertificatesChain(no, s->cert_file, s->key_file);
        if (st != NATS_OK) {
            char what[1100];
            snprintf(what, sizeof what, "%s, %s: cannot load the client certificate and key (PEM)",
                     s->cert_file, s->key_file);
            return nats_failed(st, what, why, whylen);
        }
    }
    return CMS_NATSAUTH_OK;
}

static natsStatus set_servers(natsOptions *no, const char *url)
{
    if (strchr(url, ',') == NULL)
        return natsOptions_SetURL(no, url);
    char buf[4096];
    if (strlen(url) >= sizeof buf)
        return NATS_INVALID_ARG;
    memcpy(buf, url, strlen(url) + 1);
    const char *urls[CMS_NATSAUTH_URLS_MAX];
    int n = 0;
    for (char *p = buf;;) {
        char *end = strchr(p, ',');
        if (end != NULL)
            *end = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            p[--len] = '\0';
        if (len == 0 || n == CMS_NATSAUTH_URLS_MAX)
            return NATS_INVALID_ARG;
        urls[n++] = p;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return natsOptions_SetServers(no, urls, n);
}

cms_natsauth_err cms_natsauth_apply(natsOptions *no, const char *url, const cms_nats_security *s,
                                    cms_natsauth_info *info, char *why, size_t whylen)
{
    static const cms_nats_security none = {0};
    cms_natsauth_info mine;
    cms_natsauth_err err = CMS_NATSAUTH_OK;
    if (info == NULL)
        info = &mine;
    memset(info, 0, sizeof *info);
    snprintf(info->inbox_prefix, sizeof info->inbox_prefix, "%s", DEFAULT_PREFIX);
    if (s == NULL)
        s = &none;
    if (no == NULL || url == NULL) {
        snprintf(why, whylen, "no NATS options or URL");
        return CMS_NATSAUTH_EINVAL;
    }
    if (set_servers(no, url) != NATS_OK) {
        /* not the URL itself: it may hold a password */
        snprintf(why, whylen,
                 "--nats-url is one URL or several separated by commas (none empty, at most "
                 "%d)",
                 CMS_NATSAUTH_URLS_MAX);
        return CMS_NATSAUTH_EINVAL;
    }
    if (s->creds_file && *s->creds_file) {
        snprintf(info->creds_file, sizeof info->creds_file, "%s", s->creds_file);
        if ((err = apply_creds(no, s, info, why, whylen)) != CMS_NATSAUTH_OK)
            return err;
    }
    if (s->inbox_prefix && *s->inbox_prefix) {
        if (!prefix_ok(s->inbox_prefix)) {
            snprintf(why, whylen,
                     "--nats-inbox-prefix \"%s\" is no subject prefix: want tokens joined by '.', "
                     "without blanks or wildcards, at most %d characters",
                     s->inbox_prefix, CMS_NATSAUTH_PREFIX_MAX);
            return CMS_NATSAUTH_EINVAL;
        }
        snprintf(info->inbox_prefix, sizeof info->inbox_prefix, "%s", s->inbox_prefix);
    }
    if (strcmp(info->inbox_prefix, DEFAULT_PREFIX) != 0) {
        natsStatus st = natsOptions_SetCustomInboxPrefix(no, info->inbox_prefix);
        if (st != NATS_OK) {
            err = nats_failed(st, "cannot set the inbox prefix", why, whylen);
            return err == CMS_NATSAUTH_ETLS ? CMS_NATSAUTH_EINVAL : err;
        }
    }
    info->tls = wants_tls(url, s);
    if (info->tls && (err = apply_tls(no, s, why, whylen)) != CMS_NATSAUTH_OK)
        return err;
    return CMS_NATSAUTH_OK;
}

void cms_natsauth_refused_text(const cms_natsauth_info *info, char *out, size_t len)
{
    switch (info->kind) {
    case CMS_NATSAUTH_NONE:
        snprintf(out, len,
                 "the NATS server requires credentials and none were given: set --nats-creds "
                 "(CMS_NATS_CREDS) to this process's credentials file");
        break;
    case CMS_NATSAUTH_PASSWORD:
        snprintf(out, len,
                 "the NATS server refused user \"%s\" (from %s): check that the password in %s "
                 "is the one the server's authorization gives \"%s\", or add the user there "
                 "(a first connection is retried; restart a process that was refused on "
                 "reconnecting)",
                 info->user, info->creds_file, info->creds_file, info->user);
        break;
    case CMS_NATSAUTH_JWT:
        snprintf(out, len,
                 "the NATS server refused the user JWT of %s: check that it is signed by an "
                 "account the server trusts and has not expired (nsc describe user), or "
                 "regenerate it (a first connection is retried; restart a process that was "
                 "refused on reconnecting)",
                 info->creds_file);
        break;
    }
}

bool cms_natsauth_violation_parse(const char *text, const char **op, char *subject, size_t len)
{
    static const char head[] = "permissions violation for ";
    const char *p = text ? strcasestr(text, head) : NULL;
    if (p == NULL || len == 0)
        return false;
    p += sizeof head - 1;
    if (strncasecmp(p, "publish", 7) == 0)
        *op = "publish";
    else if (strncasecmp(p, "subscription", 12) == 0)
        *op = "subscribe";
    else
        return false;
    const char *to = strcasestr(p, " to ");
    if (to == NULL)
        return false;
    p = to + 4;
    size_t n;
    if (*p == '"') {
        p++;
        n = strcspn(p, "\"");
    } else {
        n = strcspn(p, " \t\r\n");
    }
    if (n == 0)
        return false;
    snprintf(subject, len, "%.*s", (int)n, p);
    return true;
}

void cms_natsauth_from_config(const cms_config *c, cms_nats_security *out)
{
    memset(out, 0, sizeof *out);
    out->creds_file = cms_config_str(c, "nats-creds");
    out->inbox_prefix = cms_config_str(c, "nats-inbox-prefix");
    out->ca_file = cms_config_str(c, "nats-ca");
    out->cert_file = cms_config_str(c, "nats-cert");
    out->key_file = cms_config_str(c, "nats-key");
    out->tls = cms_config_bool(c, "nats-tls");
}
