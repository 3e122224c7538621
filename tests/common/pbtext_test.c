/* pbtext: string fields with a NUL or invalid UTF-8 are named before
 * protobuf-c decodes them (it would cut the one short and pass the other
 * on); valid text, other field types, unknown fields and nested messages
 * are walked as they should be, and malformed bytes are left alone. */
#include "cms/v1/identity.pb-c.h"
#include "pbtext.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static cms_pbtext_fault check(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n,
                              const char **field)
{
    *field = NULL;
    return cms_pbtext_check(d, p, n, CMS_PBTEXT_CHECK_ALL, field);
}

Test(pbtext, protobuf_c_itself_cuts_a_string_at_a_nul)
{
    /* why the check exists: the decoder takes "ab\0cd" as "ab" */
    static const uint8_t m[] = {0x0a, 0x05, 'a', 'b', 0, 'c', 'd'};
    Cms__V1__CreateIdentity *ci = cms__v1__create_identity__unpack(NULL, sizeof m, m);
    cr_assert_not_null(ci);
    cr_assert_str_eq(ci->name, "ab");
    cms__v1__create_identity__free_unpacked(ci, NULL);
    const char *field;
    cr_assert_eq(check(&cms__v1__create_identity__descriptor, m, sizeof m, &field), CMS_PBTEXT_NUL);
    cr_assert_str_eq(field, "name");
}

Test(pbtext, invalid_utf8_is_named_by_its_field)
{
    /* name valid, type \xff, metadata_json fine */
    static const uint8_t m[] = {0x0a, 0x02, 'o', 'k', 0x12, 0x01, 0xff, 0x1a, 0x02, '{', '}'};
    const char *field;
    cr_assert_eq(check(&cms__v1__create_identity__descriptor, m, sizeof m, &field),
                 CMS_PBTEXT_UTF8);
    cr_assert_str_eq(field, "type");
    cr_assert_str_eq(cms_pbtext_fault_text(CMS_PBTEXT_UTF8), "is not valid UTF-8");
    /* asked for NULs only, it lets invalid UTF-8 by */
    cr_assert_eq(cms_pbtext_check(&cms__v1__create_identity__descriptor, m, sizeof m,
                                  CMS_PBTEXT_CHECK_NUL, &field),
                 CMS_PBTEXT_OK);
}

Test(pbtext, nested_messages_are_walked)
{
    Cms__V1__Identity id = CMS__V1__IDENTITY__INIT;
    id.name = (char *)"inner";
    id.created_at_us = 12345;
    Cms__V1__Identity *ids[] = {&id};
    Cms__V1__IdentityPage page = CMS__V1__IDENTITY_PAGE__INIT;
    page.n_identities = 1;
    page.identities = ids;
    page.next = (char *)"n";
    size_t n = cms__v1__identity_page__get_packed_size(&page);
    uint8_t *buf = malloc(n);
    cr_assert_not_null(buf);
    cms__v1__identity_page__pack(&page, buf);
    const char *field;
    cr_assert_eq(check(&cms__v1__identity_page__descriptor, buf, n, &field), CMS_PBTEXT_OK);
    /* the inner name's first byte made a NUL */
    uint8_t *at = memmem(buf, n, "inner", 5);
    cr_assert_not_null(at);
    at[2] = 0;
    cr_assert_eq(check(&cms__v1__identity_page__descriptor, buf, n, &field), CMS_PBTEXT_NUL);
    cr_assert_str_eq(field, "name");
    at[2] = 0xfe;
    cr_assert_eq(check(&cms__v1__identity_page__descriptor, buf, n, &field), CMS_PBTEXT_UTF8);
    free(buf);
}

Test(pbtext, other_types_unknown_fields_and_malformed_bytes_are_not_its_business)
{
    const char *field;
    /* ListIdentities.limit (int32, field 3) and an unknown field 99 of
     * length-delimited bytes with a NUL and \xff: not text */
    static const uint8_t m[] = {0x18, 0x05, 0x9a, 0x06, 0x03, 0x00, 0xff, 0x01};
    cr_assert_eq(check(&cms__v1__list_identities__descriptor, m, sizeof m, &field), CMS_PBTEXT_OK);
    /* a length running past the end, a varint that never ends, wire type 7 */
    static const uint8_t cut[] = {0x0a, 0x09, 'a'};
    static const uint8_t endless[] = {0x18, 0xff, 0xff};
    static const uint8_t seven[] = {0x0f, 0x00};
    cr_assert_eq(check(&cms__v1__create_identity__descriptor, cut, sizeof cut, &field),
                 CMS_PBTEXT_OK);
    cr_assert_eq(check(&cms__v1__create_identity__descriptor, endless, sizeof endless, &field),
                 CMS_PBTEXT_OK);
    cr_assert_eq(check(&cms__v1__create_identity__descriptor, seven, sizeof seven, &field),
                 CMS_PBTEXT_OK);
    cr_assert_eq(check(&cms__v1__create_identity__descriptor, NULL, 0, &field), CMS_PBTEXT_OK);
    cr_assert_eq(check(NULL, m, sizeof m, &field), CMS_PBTEXT_OK);
}
