/* common/utf8: what is valid UTF-8 and what is not. */
#include "utf8.h"

#include <criterion/criterion.h>
#include <string.h>

Test(utf8, by_table_3_7)
{
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {"", 1},
        {"plain ascii", 1},
        {"\xc3\xa9t\xc3\xa9", 1},       /* été */
        {"\xe2\x82\xac", 1},            /* € */
        {"\xf0\x9f\x98\x80", 1},        /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 1},        /* U+10FFFF */
        {"\xc0\xaf", 0},                /* overlong / */
        {"\xe0\x80\xaf", 0},            /* overlong */
        {"\xed\xa0\x80", 0},            /* a surrogate */
        {"\xf4\x90\x80\x80", 0},        /* past U+10FFFF */
        {"\xf5\x80\x80\x80", 0},        /* no such lead byte */
        {"\x80", 0},                    /* a lone continuation */
        {"\xe2\x82", 0},                /* cut short */
        {"a\xc3", 0},                   /* cut short at the end */
        {"\xc3\x28", 0},                /* a bad continuation */
        {"'; DROP TABLE x; --\\$1", 1}, /* SQL is text like any other */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(cms_utf8_valid(cases[i].s, strlen(cases[i].s)), cases[i].ok, "case %zu", i);
}
