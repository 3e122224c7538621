/* cms-worker's dataset reader (services/worker/dataset.h): what it takes,
 * and for each refusal its code, the line and column it names, and that
 * its sentence says so; the names a dispatch may give a dataset. */
#include "dataset.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CMS_TEST_DATA_DIR
#error CMS_TEST_DATA_DIR must name tests/data
#endif

static dpsgd_data d;
static dataset_err e;

static void release(void)
{
    dataset_release(&d);
}

TestSuite(parse, .fini = release);
TestSuite(load, .fini = release);

static dataset_code parse(const char *text)
{
    return dataset_parse(text, strlen(text), NULL, &d, &e);
}

/* Refused with code at line and column, the sentence holding says (NULL:
 * not checked) and the output left empty. */
static void refused(const char *text, dataset_code code, size_t line, size_t column,
                    const char *says)
{
    dataset_code c = parse(text);
    cr_assert_eq(c, code, "%s: %s, want %s (%s)", text, dataset_strerror(c), dataset_strerror(code),
                 e.msg);
    cr_assert_eq(e.code, code);
    cr_assert_eq(e.line, line, "%s: line %zu, want %zu (%s)", text, e.line, line, e.msg);
    cr_assert_eq(e.column, column, "%s: column %zu, want %zu (%s)", text, e.column, column, e.msg);
    if (says != NULL)
        cr_assert_not_null(strstr(e.msg, says), "'%s' does not say '%s'", e.msg, says);
    cr_assert(d.rows == 0 && d.x == NULL && d.y == NULL);
}

Test(parse, numbers_and_labels_row_by_row)
{
    cr_assert_eq(parse("a,b,label\n1,2,0\n3.5,-4e-1,1\n-0,+7.25E2,1\n"), DATASET_OK, "%s", e.msg);
    cr_assert_eq(d.rows, 3);
    cr_assert_eq(d.features, 2);
    const double x[] = {1, 2, 3.5, -0.4, 0, 725};
    const uint8_t y[] = {0, 1, 1};
    for (int i = 0; i < 6; i++)
        cr_assert_float_eq(d.x[i], x[i], 1e-15, "x[%d]", i);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(d.y[i], y[i]);
}

Test(parse, crlf_line_ends_and_a_last_line_without_one)
{
    cr_assert_eq(parse("f,label\r\n0.5,1\r\n1.5,0"), DATASET_OK, "%s", e.msg);
    cr_assert_eq(d.rows, 2);
    cr_assert_eq(d.features, 1);
    cr_assert_float_eq(d.x[1], 1.5, 1e-15);
    cr_assert_eq(d.y[1], 0);
}

Test(parse, a_label_written_as_a_decimal_is_taken)
{
    cr_assert_eq(parse("f,label\n1,1.0\n2,0.000\n"), DATASET_OK, "%s", e.msg);
    cr_assert(d.y[0] == 1 && d.y[1] == 0);
}

Test(parse, an_empty_file)
{
    refused("", DATASET_EEMPTY, 0, 0, "empty");
}

Test(parse, a_header_without_rows)
{
    refused("a,label\n", DATASET_EEMPTY, 2, 0, "no rows");
    refused("a,label", DATASET_EEMPTY, 2, 0, "no rows");
}

Test(parse, a_bad_number_names_its_line_and_column)
{
    refused("a,b,label\n1,2,0\n1,x,1\n", DATASET_ENUMBER, 3, 2,
            "line 3, column 2 (\"b\"): \"x\" is not a finite decimal number");
    const char *bad[] = {"inf",  "nan", "-inf", "1e999", " 1",  "1 ",
                         "0x10", "1,5", "",     "1e",    "--1", "1.2.3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "a,b,label\n%s,2,0\n", bad[i]);
        dataset_code c = parse(text);
        if (strchr(bad[i], ',') != NULL) {
            cr_assert_eq(c, DATASET_ECOLUMNS, "%s", bad[i]);
            continue;
        }
        cr_assert_eq(c, DATASET_ENUMBER, "\"%s\": %s", bad[i], e.msg);
        cr_assert_eq(e.line, 2);
        cr_assert_eq(e.column, 1, "\"%s\"", bad[i]);
        cr_assert_not_null(strstr(e.msg, "(\"a\")"), "%s", e.msg);
    }
}

Test(parse, a_number_longer_than_the_field_limit)
{
    char text[256];
    char digits[DATASET_FIELD_MAX + 2];
    memset(digits, '1', sizeof digits - 1);
    digits[sizeof digits - 1] = '\0';
    snprintf(text, sizeof text, "a,label\n%s,1\n", digits);
    refused(text, DATASET_ENUMBER, 2, 1, "is not a finite decimal number");
}

Test(parse, a_wrong_number_of_fields)
{
    refused("a,b,label\n1,2,0\n1,2,3,0\n", DATASET_ECOLUMNS, 3, 0,
            "line 3 has 4 fields: the header has 3");
    refused("a,b,label\n1,0\n", DATASET_ECOLUMNS, 2, 0, "line 2 has 2 fields: the header has 3");
    refused("a,b,label\n1,2,0\n\n1,2,0\n", DATASET_ECOLUMNS, 3, 0, "line 3 is empty");
    refused("a,b,label\n1,2,0\n\n", DATASET_ECOLUMNS, 3, 0, "empty");
}

Test(parse, a_label_other_than_0_or_1)
{
    refused("a,label\n1,0\n2,2\n", DATASET_ELABEL, 3, 2,
            "line 3, column 2 (\"label\"): the label \"2\" is not 0 or 1");
    refused("a,label\n1,0.5\n", DATASET_ELABEL, 2, 2, "\"0.5\"");
    refused("a,label\n1,yes\n", DATASET_ELABEL, 2, 2, "\"yes\"");
    refused("a,label\n1,\n", DATASET_ELABEL, 2, 2, "\"\"");
    refused("a,label\n1,-1\n", DATASET_ELABEL, 2, 2, NULL);
}

Test(parse, a_bad_header)
{
    refused("label\n1\n", DATASET_EHEADER, 1, 0, "want the features' names");
    refused("a,b,y\n1,2,0\n", DATASET_EHEADER, 1, 3, "the last column is \"y\"");
    refused("a,,label\n1,2,0\n", DATASET_EHEADER, 1, 2, "no name");
    refused("\n1,0\n", DATASET_EHEADER, 1, 0, NULL);
}

Test(parse, control_characters_are_not_echoed)
{
    refused("a,label\n\x1b[2J,1\n", DATASET_ENUMBER, 2, 1, "\"?[2J\"");
}

Test(parse, a_nul_byte)
{
    const char text[] = "a,label\n1\0,0\n";
    dataset_code c = dataset_parse(text, sizeof text - 1, NULL, &d, &e);
    cr_assert_eq(c, DATASET_EREAD, "%s", e.msg);
}

Test(parse, the_limits_are_kept)
{
    dataset_limits lim = {.max_bytes = 1000, .max_rows = 2, .max_features = 2};
    const char *three = "a,b,label\n1,2,0\n1,2,0\n1,2,1\n";
    cr_assert_eq(dataset_parse(three, strlen(three), &lim, &d, &e), DATASET_ETOOBIG);
    cr_assert_not_null(strstr(e.msg, "more than 2 rows"), "%s", e.msg);
    const char *two = "a,b,label\n1,2,0\n1,2,1\n";
    cr_assert_eq(dataset_parse(two, strlen(two), &lim, &d, &e), DATASET_OK, "%s", e.msg);
    dataset_release(&d);
    const char *wide = "a,b,c,label\n1,2,3,0\n";
    cr_assert_eq(dataset_parse(wide, strlen(wide), &lim, &d, &e), DATASET_ETOOBIG);
    cr_assert_not_null(strstr(e.msg, "3 features"), "%s", e.msg);
    lim.max_bytes = 10;
    cr_assert_eq(dataset_parse(two, strlen(two), &lim, &d, &e), DATASET_ETOOBIG);
    cr_assert(d.x == NULL && d.y == NULL);
}

Test(load, the_synthetic_set)
{
    cr_assert_eq(dataset_load(CMS_TEST_DATA_DIR "/synthetic.csv", NULL, &d, &e), DATASET_OK, "%s",
                 e.msg);
    cr_assert_eq(d.rows, 2000);
    cr_assert_eq(d.features, 8);
    size_t ones = 0;
    for (size_t i = 0; i < d.rows; i++)
        ones += d.y[i];
    cr_assert(ones > 600 && ones < 1400, "%zu ones", ones);
}

Test(load, a_missing_file_and_a_directory)
{
    cr_assert_eq(dataset_load(CMS_TEST_DATA_DIR "/no-such-dataset.csv", NULL, &d, &e),
                 DATASET_EMISSING);
    cr_assert_eq(dataset_load(CMS_TEST_DATA_DIR, NULL, &d, &e), DATASET_EREAD);
}

Test(load, a_file_over_the_byte_limit)
{
    dataset_limits lim = dataset_default_limits;
    lim.max_bytes = 1000;
    cr_assert_eq(dataset_load(CMS_TEST_DATA_DIR "/synthetic.csv", &lim, &d, &e), DATASET_ETOOBIG);
    cr_assert_not_null(strstr(e.msg, "at most 1000"), "%s", e.msg);
}

Test(name, plain_names_are_taken)
{
    const char *ok[] = {"synthetic", "mnist", "a", "Train_v1.2-final", ".hidden", "x.csv"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert(dataset_name_ok(ok[i], NULL, 0), "%s", ok[i]);
    char longest[DATASET_NAME_MAX + 1];
    memset(longest, 'a', DATASET_NAME_MAX);
    longest[DATASET_NAME_MAX] = '\0';
    cr_assert(dataset_name_ok(longest, NULL, 0));
}

Test(name, a_name_that_could_leave_the_data_directory_is_refused)
{
    const char *bad[] = {"",  "../etc/passwd", "a/b", "/abs", "..", "a..b", "a b",
                         "é", "a\\b",          "a\n", "~x",   "a*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[256] = "";
        cr_assert_not(dataset_name_ok(bad[i], why, sizeof why), "\"%s\" was taken", bad[i]);
        cr_assert_not_null(strstr(why, "A-Z, a-z, 0-9"), "%s", why);
    }
    char too_long[DATASET_NAME_MAX + 2];
    memset(too_long, 'a', DATASET_NAME_MAX + 1);
    too_long[DATASET_NAME_MAX + 1] = '\0';
    char why[256];
    cr_assert_not(dataset_name_ok(too_long, why, sizeof why));
    cr_assert_not_null(strstr(why, "longer than 255"), "%s", why);
}

Test(name, the_path_is_the_name_dot_csv_in_the_directory)
{
    char path[64];
    cr_assert(dataset_path("/data", "synthetic", path, sizeof path));
    cr_assert_str_eq(path, "/data/synthetic.csv");
    char small[8];
    cr_assert_not(dataset_path("/data", "synthetic", small, sizeof small));
}
