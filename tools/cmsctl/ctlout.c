/* The output convention of cmsctl; see ctlout.h. */
#include "ctlout.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ctlcmd.h"

int cmsctl_out_format_get(const char *prog, const cms_config *cfg, cmsctl_out_format *out)
{
    const char *o = cms_config_str(cfg, "output");
    bool json = cms_config_bool(cfg, "json");
    cmsctl_out_format f;
    if (o == NULL || strcmp(o, "table") == 0)
        f = CMSCTL_OUT_TABLE;
    else if (strcmp(o, "json") == 0)
        f = CMSCTL_OUT_JSON;
    else if (strcmp(o, "ndjson") == 0)
        f = CMSCTL_OUT_NDJSON;
    else
        return cmsctl_usage(prog, "-o \"%s\" is not an output format: want table, json or ndjson",
                            o);
    if (json) {
        if (cms_config_is_set(cfg, "output") && f != CMSCTL_OUT_JSON)
            return cmsctl_usage(prog, "--json is -o json: it cannot go with -o %s", o);
        f = CMSCTL_OUT_JSON;
    }
    *out = f;
    return CMSCTL_EXIT_OK;
}

static void wipe_member(json_t *v, const char *key)
{
    json_t *s = key != NULL && json_is_object(v) ? json_object_get(v, key) : NULL;
    if (json_is_string(s))
        sodium_memzero((char *)json_string_value(s), json_string_length(s));
}

/* One document, then a newline. Returns 0 on success. */
static int dump(json_t *v, FILE *to, size_t flags)
{
    int rc = json_dumpf(v, to, flags);
    if (fputc('\n', to) == EOF)
        rc = -1;
    return rc;
}

int cmsctl_out_emit_to(const char *prog, cmsctl_out_format f, FILE *to, json_t *v,
                       const char *secret_key)
{
    if (v == NULL)
        return cmsctl_fail(prog, "out of memory rendering JSON");
    int rc = 0;
    if (f == CMSCTL_OUT_NDJSON && json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (rc == 0)
                rc = dump(e, to, JSON_COMPACT);
            wipe_member(e, secret_key);
        }
    } else {
        rc = dump(v, to, f == CMSCTL_OUT_NDJSON ? JSON_COMPACT : JSON_INDENT(2));
        wipe_member(v, secret_key);
    }
    json_decref(v);
    if (fflush(to) != 0)
        rc = -1;
    return rc == 0 ? CMSCTL_EXIT_OK : cmsctl_fail(prog, "cannot write the output");
}

int cmsctl_out_emit(const char *prog, cmsctl_out_format f, json_t *v, const char *secret_key)
{
    return cmsctl_out_emit_to(prog, f, stdout, v, secret_key);
}

void cmsctl_out_time(json_t *o, const char *name, int64_t us)
{
    char t[CMSCTL_CMD_TIME_MAX], key[64];
    cmsctl_cmd_time_format(us, true, t);
    json_object_set_new(o, name, t[0] != '\0' ? json_string(t) : json_null());
    snprintf(key, sizeof key, "%s_us", name);
    json_object_set_new(o, key, json_integer(us));
}

const char *cmsctl_out_clean(const char *s, char *buf, size_t len)
{
    size_t i = 0;
    for (; s[i] != '\0' && i + 1 < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    buf[i] = '\0';
    return buf;
}

json_t *cmsctl_out_str(const char *s)
{
    json_t *v = json_string(s);
    if (v != NULL)
        return v;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (char *p = copy; *p != '\0'; p++) {
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    }
    v = json_string(copy);
    free(copy);
    return v;
}

json_t *cmsctl_out_json_text(const char *text)
{
    if (text[0] == '\0')
        return json_object();
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v != NULL ? v : cmsctl_out_str(text);
}

char *cmsctl_out_compact(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    char *s = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return s != NULL ? s : strdup(text);
}

void cmsctl_out_none(cmsctl_out_format f, const char *what)
{
    if (f != CMSCTL_OUT_JSON)
        fprintf(stderr, "(%s)\n", what);
}
