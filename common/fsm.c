/* State machines; see fsm.h. */
#include "fsm.h"

#include <stdlib.h>

const char *cms_fsm_name(const cms_fsm *f, int state)
{
    return cms_enum_text(f->names, f->nstates, state);
}

bool cms_fsm_allowed(const cms_fsm *f, int from, int to)
{
    if (from < 0 || to < 0 || (size_t)from >= f->nstates || (size_t)to >= f->nstates)
        return false;
    return f->moves[(size_t)from * f->nstates + (size_t)to];
}

int cms_fsm_step(const cms_fsm *f, int from, int to, const char *id)
{
    bool ok = cms_fsm_allowed(f, from, to);
    if (from == to && !ok)
        return from;
    if (!ok) {
        cms_log_error("impossible state transition", "{s:s, s:s, s:s, s:s}", "object", f->what,
                      "id", id ? id : "", "from", cms_fsm_name(f, from), "to", cms_fsm_name(f, to));
        abort();
    }
    if (from != to)
        cms_log(f->level, "state", "{s:s, s:s, s:s, s:s}", "object", f->what, "id", id ? id : "",
                "from", cms_fsm_name(f, from), "to", cms_fsm_name(f, to));
    return to;
}
