/* check_conf.c — the XML configuration: defaults, loading, error messages,
 * refusal of DTDs/entities, print→load round trip, and agreement of the
 * committed artefacts (conf/cxr-triage.xsd, conf/cxr-triage.xml, the key
 * table in docs/configuration.md) with the key table. */
#include <check.h>
#include <limits.h>
#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/conf.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------ */

static struct cxr_conf *load_str(const char *xml, enum cxr_status *st, char *err)
{
    struct cxr_conf *c = (struct cxr_conf *)1; /* must come back NULL on failure */
    *st = cxr_conf_load_memory(xml, strlen(xml), "test.xml", &c, err);
    if (*st != CXR_OK)
        ck_assert_ptr_null(c);
    return c;
}

static char *print_to_string(const struct cxr_conf *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(cxr_conf_print(c, fp), CXR_OK);
    fclose(fp);
    return text;
}

static char *repo_file(const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", cxr_test_source_dir(), rel);
    char *text = cxr_test_read_file(path, NULL);
    ck_assert_msg(text != NULL, "cannot read %s", path);
    return text;
}

static bool have_xmllint(void)
{
    if (cxr_test_sh("command -v xmllint >/dev/null 2>&1") == 0)
        return true;
    printf("SKIP xmllint checks: xmllint (libxml2-utils) not installed\n");
    return false;
}

/* A document with every key set to a value that is not its default. */
static const char *ALL_SET =
    "<?xml version=\"1.0\"?>\n"
    "<cxr-triage version=\"1\">\n"
    "  <model><path>/opt/m/x.safetensors</path><backend>cuda</backend><precision>bf16</precision>\n"
    "    <threads>4</threads><batch-size>32</batch-size></model>\n"
    "  <gate><modalities>DX</modalities><allow-secondary-capture>true</allow-secondary-capture>\n"
    "    <body-parts>CHEST THORAX</body-parts><allow-missing-body-part>false</allow-missing-body-part>\n"
    "    <view-positions>PA</view-positions><allow-missing-view-position>false</allow-missing-view-position>\n"
    "    <for-processing>analyse</for-processing><min-rows>512</min-rows><max-rows>4096</max-rows>\n"
    "    <min-columns>300</min-columns><max-columns>5000</max-columns><age-policy>reject</age-policy></gate>\n"
    "  <sr><output-dir>out/sr</output-dir><manufacturer>ACME &amp; Sons</manufacturer>\n"
    "    <series-description>AI &lt;triage&gt;</series-description><series-number>77</series-number>\n"
    "    <device-observer-uid>1.2.826.0.1.3680043.10.1</device-observer-uid>\n"
    "    <institution-name>St. Elsewhere</institution-name><sop-class>enhanced</sop-class></sr>\n"
    "  <priority><urgent-threshold>0.9</urgent-threshold><priority-threshold>0.3333333333333333</priority-threshold>\n"
    "    <urgent-name>STAT</urgent-name><priority-name>HIGH</priority-name><routine-name>LOW</routine-name>\n"
    "    <not-analysed-name>N-A</not-analysed-name><max-wait-minutes>0</max-wait-minutes></priority>\n"
    "  <log><level>debug</level><allow-phi>true</allow-phi></log>\n"
    "</cxr-triage>\n";

/* ---- defaults ----------------------------------------------------------- */

START_TEST(test_defaults_values)
{
    struct cxr_conf *c = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&c), CXR_OK);
    ck_assert_str_eq(c->model.path, "../models/cxr-default.safetensors");
    ck_assert_int_eq(c->model.backend, CXR_CONF_BACKEND_AUTO);
    ck_assert_int_eq(c->model.precision, CXR_CONF_PRECISION_AUTO);
    ck_assert_int_eq(c->model.threads, 0);
    ck_assert_int_eq(c->model.batch_size, 8);
    ck_assert_uint_eq(c->gate.modalities.count, 2);
    ck_assert_str_eq(c->gate.modalities.items[0], "CR");
    ck_assert_str_eq(c->gate.modalities.items[1], "DX");
    ck_assert(!c->gate.allow_secondary_capture);
    ck_assert_uint_eq(c->gate.body_parts.count, 1);
    ck_assert_str_eq(c->gate.body_parts.items[0], "CHEST");
    ck_assert(c->gate.allow_missing_body_part);
    ck_assert_uint_eq(c->gate.view_positions.count, 2);
    ck_assert_str_eq(c->gate.view_positions.items[0], "PA");
    ck_assert_str_eq(c->gate.view_positions.items[1], "AP");
    ck_assert(c->gate.allow_missing_view_position);
    ck_assert_int_eq(c->gate.for_processing, CXR_CONF_FOR_PROCESSING_REJECT);
    ck_assert_int_eq(c->gate.min_rows, 256);
    ck_assert_int_eq(c->gate.max_rows, 8192);
    ck_assert_int_eq(c->gate.min_cols, 256);
    ck_assert_int_eq(c->gate.max_cols, 8192);
    ck_assert_int_eq(c->gate.age_policy, CXR_CONF_AGE_REJECT); /* issue 16: safe default */
    ck_assert_str_eq(c->sr.output_dir, "");
    ck_assert_str_eq(c->sr.manufacturer, "cxr-triage project");
    ck_assert_str_eq(c->sr.series_description, "CXR triage AI result");
    ck_assert_int_eq(c->sr.series_number, 9901);
    ck_assert_str_eq(c->sr.device_observer_uid, "");
    ck_assert_str_eq(c->sr.institution_name, "");
    ck_assert_int_eq(c->sr.sop_class, CXR_CONF_SR_COMPREHENSIVE);
    ck_assert(c->priority.urgent_threshold < 0);
    ck_assert(c->priority.priority_threshold < 0);
    ck_assert_str_eq(c->priority.urgent_name, "URGENT");
    ck_assert_str_eq(c->priority.priority_name, "PRIORITY");
    ck_assert_str_eq(c->priority.routine_name, "ROUTINE");
    ck_assert_str_eq(c->priority.not_analysed_name, "NOT_ANALYSED");
    ck_assert_int_eq(c->priority.max_wait_minutes, 60);
    ck_assert_str_eq(c->log.level, "info");
    ck_assert(!c->log.allow_phi);
    ck_assert_int_eq(c->plugin.metadata, CXR_CONF_PLUGIN_METADATA_GATED);
    ck_assert_str_eq(c->source_path, "");
    cxr_conf_free(c);
    cxr_conf_free(NULL); /* no-op */
}
END_TEST

START_TEST(test_defaults_key_paths)
{
    struct cxr_conf *c = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&c), CXR_OK);
    size_t n = cxr_conf_key_count();
    ck_assert_uint_eq(n, 82); /* one per field of conf.h's section structs */
    ck_assert_ptr_null(cxr_conf_key_path(n));
    for (size_t i = 0; i < n; i++) {
        const char *k = cxr_conf_key_path(i);
        ck_assert_ptr_nonnull(k);
        char buf[256];
        ck_assert_msg(cxr_conf_get_text(c, k, buf, sizeof buf) == CXR_OK, "get_text %s", k);
    }
    cxr_conf_free(c);
}
END_TEST

/* ---- loading good documents -------------------------------------------- */

START_TEST(test_load_shipped_equals_defaults)
{
    char path[PATH_MAX], err[CXR_ERRLEN];
    snprintf(path, sizeof path, "%s/conf/cxr-triage.xml", cxr_test_source_dir());
    struct cxr_conf *c = NULL, *d = NULL;
    ck_assert_msg(cxr_conf_load(path, &c, err) == CXR_OK, "%s", err);
    ck_assert_int_eq(cxr_conf_defaults(&d), CXR_OK);
    ck_assert(cxr_conf_equal(c, d));
    ck_assert_int_eq(c->model.batch_size, 8);
    ck_assert_str_eq(c->gate.modalities.items[1], "DX");
    ck_assert(c->source_path[0] == '/'); /* absolute, so relative paths survive a chdir */
    cxr_conf_free(c);
    cxr_conf_free(d);
}
END_TEST

START_TEST(test_load_empty_root_gives_defaults)
{
    static const char *docs[] = {
        "<cxr-triage/>", "<cxr-triage version=\"1\"></cxr-triage>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<cxr-triage>\n"
        "  <model/><gate></gate>\n</cxr-triage>\n"};
    struct cxr_conf *d = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&d), CXR_OK);
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        enum cxr_status st;
        char err[CXR_ERRLEN];
        struct cxr_conf *c = load_str(docs[i], &st, err);
        ck_assert_msg(st == CXR_OK, "doc %zu: %s", i, err);
        ck_assert(cxr_conf_equal(c, d));
        cxr_conf_free(c);
    }
    cxr_conf_free(d);
}
END_TEST

START_TEST(test_load_all_keys_set)
{
    enum cxr_status st;
    char err[CXR_ERRLEN];
    struct cxr_conf *c = load_str(ALL_SET, &st, err);
    ck_assert_msg(st == CXR_OK, "%s", err);
    ck_assert_str_eq(c->model.path, "/opt/m/x.safetensors");
    ck_assert_int_eq(c->model.backend, CXR_CONF_BACKEND_CUDA);
    ck_assert_int_eq(c->model.precision, CXR_CONF_PRECISION_BF16);
    ck_assert_int_eq(c->model.threads, 4);
    ck_assert_int_eq(c->model.batch_size, 32);
    ck_assert_uint_eq(c->gate.modalities.count, 1);
    ck_assert_str_eq(c->gate.body_parts.items[1], "THORAX");
    ck_assert(c->gate.allow_secondary_capture && !c->gate.allow_missing_body_part);
    ck_assert(!c->gate.allow_missing_view_position);
    ck_assert_int_eq(c->gate.for_processing, CXR_CONF_FOR_PROCESSING_ANALYSE);
    ck_assert_int_eq(c->gate.min_rows, 512);
    ck_assert_int_eq(c->gate.max_cols, 5000);
    ck_assert_int_eq(c->gate.age_policy, CXR_CONF_AGE_REJECT);
    ck_assert_str_eq(c->sr.output_dir, "out/sr");
    ck_assert_str_eq(c->sr.manufacturer, "ACME & Sons");
    ck_assert_str_eq(c->sr.series_description, "AI <triage>");
    ck_assert_int_eq(c->sr.series_number, 77);
    ck_assert_str_eq(c->sr.device_observer_uid, "1.2.826.0.1.3680043.10.1");
    ck_assert_int_eq(c->sr.sop_class, CXR_CONF_SR_ENHANCED);
    ck_assert_double_eq(c->priority.urgent_threshold, 0.9);
    ck_assert_double_eq(c->priority.priority_threshold, 0.3333333333333333);
    ck_assert_str_eq(c->priority.not_analysed_name, "N-A");
    ck_assert_int_eq(c->priority.max_wait_minutes, 0);
    ck_assert_str_eq(c->log.level, "debug");
    ck_assert(c->log.allow_phi);
    cxr_conf_free(c);
}
END_TEST

/* Values are trimmed; comments and CDATA inside a value are fine; accepted
 * spellings follow the XSD's types (xs:int, xs:boolean). */
START_TEST(test_load_lexical_forms)
{
    static const char *doc =
        "<cxr-triage>\n"
        "  <model>\n    <threads>\n      +12\n    </threads>\n"
        "    <path><![CDATA[models/a&b.safetensors]]></path>\n"
        "    <batch-size>1<!-- one -->6</batch-size></model>\n"
        "  <gate><modalities>\n\tCR\n\tDX  OT\n</modalities><allow-missing-body-part>0</allow-missing-body-part></gate>\n"
        "  <priority><urgent-threshold>1.</urgent-threshold><priority-threshold>.25</priority-threshold></priority>\n"
        "</cxr-triage>\n";
    enum cxr_status st;
    char err[CXR_ERRLEN];
    struct cxr_conf *c = load_str(doc, &st, err);
    ck_assert_msg(st == CXR_OK, "%s", err);
    ck_assert_int_eq(c->model.threads, 12);
    ck_assert_str_eq(c->model.path, "models/a&b.safetensors");
    ck_assert_int_eq(c->model.batch_size, 16);
    ck_assert_uint_eq(c->gate.modalities.count, 3);
    ck_assert_str_eq(c->gate.modalities.items[2], "OT");
    ck_assert(!c->gate.allow_missing_body_part);
    ck_assert_double_eq(c->priority.urgent_threshold, 1.0);
    ck_assert_double_eq(c->priority.priority_threshold, 0.25);
    cxr_conf_free(c);
}
END_TEST

/* ---- bad documents: status, line and key in the message ---------------- */

struct bad_case {
    const char *what;
    const char *xml;
    enum cxr_status status;
    int line;            /* expected "test.xml:<line>:" */
    const char *must[3]; /* substrings the message must contain */
};

static const struct bad_case bad_cases[] = {
    {"malformed XML",
     "<cxr-triage>\n<model>\n</cxr-triage>\n",
     CXR_ERR_CONF_PARSE,
     3,
     {"not well-formed"}},
    {"mismatched tag",
     "<cxr-triage>\n<model>\n  <threads>3</thread>\n</model></cxr-triage>",
     CXR_ERR_CONF_PARSE,
     3,
     {"not well-formed", "mismatch"}},
    {"unknown key",
     "<cxr-triage>\n<model>\n  <thread>3</thread>\n</model>\n</cxr-triage>",
     CXR_ERR_CONF_SCHEMA,
     3,
     {"'model/thread'", "path, backend, precision, threads, batch-size"}},
    {"unknown section",
     "<cxr-triage>\n\n<modle/>\n</cxr-triage>",
     CXR_ERR_CONF_SCHEMA,
     3,
     {"<modle>", "model, gate, sr, priority, log"}},
    {"wrong root",
     "<?xml version=\"1.0\"?>\n<config/>\n",
     CXR_ERR_CONF_SCHEMA,
     2,
     {"<config>", "<cxr-triage"}},
    {"root in a namespace", "<cxr-triage xmlns=\"urn:x\"/>", CXR_ERR_CONF_SCHEMA, 1, {"namespace"}},
    {"int out of range",
     "<cxr-triage><model>\n<threads>300</threads></model></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     2,
     {"key 'model/threads'", "expected an integer 0..256", "got '300'"}},
    {"non-integer",
     "<cxr-triage><model>\n\n<threads>many</threads></model></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     3,
     {"key 'model/threads': expected an integer 0..256, got 'many'"}},
    {"int overflow",
     "<cxr-triage><sr><series-number>99999999999999999999</series-number></sr></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'sr/series-number'", "1..2147483647"}},
    {"bad enum word",
     "<cxr-triage>\n<model><backend>gpu</backend></model></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     2,
     {"key 'model/backend'", "one of auto, cpu, cuda", "'gpu'"}},
    {"enum in wrong case",
     "<cxr-triage><log><level>INFO</level></log></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'log/level'", "lower-case"}},
    {"bad bool",
     "<cxr-triage>\n<log>\n<allow-phi>yes</allow-phi></log></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     3,
     {"key 'log/allow-phi'", "true or false", "'yes'"}},
    {"threshold > 1",
     "<cxr-triage><priority>\n<urgent-threshold>1.5</urgent-threshold></priority></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     2,
     {"key 'priority/urgent-threshold'", "0..1", "'model'"}},
    {"threshold > 1 by less than rounding",
     "<cxr-triage><priority><urgent-threshold>1.00000000000000000001</urgent-threshold></priority></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'priority/urgent-threshold'"}},
    {"negative threshold",
     "<cxr-triage><priority><priority-threshold>-0.1</priority-threshold></priority></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'priority/priority-threshold'"}},
    {"too many list items",
     "<cxr-triage><gate>\n<modalities>A B C D E F G H I J K L M N O P Q</modalities></gate></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     2,
     {"key 'gate/modalities'", "1 to 16", "more than 16 items"}},
    {"empty list",
     "<cxr-triage><gate><body-parts>  </body-parts></gate></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'gate/body-parts'", "1 to 16"}},
    {"lower-case list item",
     "<cxr-triage><gate><body-parts>CHEST chest</body-parts></gate></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'gate/body-parts'", "item 'chest'", "upper case"}},
    {"empty required path",
     "<cxr-triage><model><path/></model></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'model/path'", "non-empty"}},
    {"text too long",
     "<cxr-triage><sr><manufacturer>0123456789012345678901234567890123456789012345678901234567890123X"
     "</manufacturer></sr></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'sr/manufacturer'", "at most 64 characters"}},
    {"backslash in LO",
     "<cxr-triage><sr><institution-name>A\\B</institution-name></sr></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'sr/institution-name'", "backslash"}},
    {"bad UID",
     "<cxr-triage><sr><device-observer-uid>1.02.3</device-observer-uid></sr></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'sr/device-observer-uid'", "DICOM UID"}},
    {"name with a space",
     "<cxr-triage><priority><urgent-name>VERY URGENT</urgent-name></priority></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'priority/urgent-name'", "A-Z a-z 0-9"}},
    {"line break inside a value",
     "<cxr-triage><sr><manufacturer>A\nB</manufacturer></sr></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     1,
     {"key 'sr/manufacturer'", "line breaks"}},
    {"min above max",
     "<cxr-triage><gate>\n<min-rows>300</min-rows>\n<max-rows>200</max-rows></gate></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     3,
     {"key 'gate/max-rows'", ">= gate/min-rows (300)", "'200'"}},
    {"urgent below priority threshold",
     "<cxr-triage><priority>\n<urgent-threshold>0.3</urgent-threshold>\n<priority-threshold>0.5</priority-threshold>"
     "</priority></cxr-triage>",
     CXR_ERR_CONF_VALUE,
     3,
     {"key 'priority/priority-threshold'", "<= priority/urgent-threshold (0.3)"}},
    {"duplicate key",
     "<cxr-triage><model>\n<threads>1</threads>\n<threads>2</threads></model></cxr-triage>",
     CXR_ERR_CONF_SCHEMA,
     3,
     {"key 'model/threads' appears twice (first at line 2)"}},
    {"duplicate section",
     "<cxr-triage>\n<log/>\n<log/></cxr-triage>",
     CXR_ERR_CONF_SCHEMA,
     3,
     {"<log> appears twice"}},
    {"attribute on a key",
     "<cxr-triage><model>\n<path unit=\"x\">a</path></model></cxr-triage>",
     CXR_ERR_CONF_SCHEMA,
     2,
     {"key 'model/path'", "attribute 'unit'"}},
    {"element inside a key",
     "<cxr-triage><model><path>\n<x/></path></model></cxr-triage>",
     CXR_ERR_CONF_SCHEMA,
     2,
     {"key 'model/path'", "<x>"}},
    {"text in a section",
     "<cxr-triage><model>\nthreads=3</model></cxr-triage>",
     CXR_ERR_CONF_SCHEMA,
     2,
     {"'threads=3'", "<model>"}},
    {"unknown root attribute",
     "<cxr-triage mode=\"x\"/>",
     CXR_ERR_CONF_SCHEMA,
     1,
     {"attribute 'mode'"}},
    {"unsupported version", "<cxr-triage version=\"2\"/>", CXR_ERR_UNSUPPORTED, 1, {"version '2'"}},
    {"undefined entity",
     "<cxr-triage><sr><manufacturer>&foo;</manufacturer></sr></cxr-triage>",
     CXR_ERR_CONF_PARSE,
     1,
     {"not well-formed", "foo"}},
    {"billion laughs",
     "<?xml version=\"1.0\"?>\n"
     "<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
     " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
     " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
     " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
     " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
     " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
     " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
     " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
     " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
     " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
     "]>\n<cxr-triage><sr><manufacturer>&lol9;</manufacturer></sr></cxr-triage>\n",
     CXR_ERR_CONF_PARSE,
     2,
     {"DOCTYPE is not allowed"}},
    {"external entity",
     "<!DOCTYPE cxr-triage [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n"
     "<cxr-triage><sr><manufacturer>&xxe;</manufacturer></sr></cxr-triage>",
     CXR_ERR_CONF_PARSE,
     1,
     {"DOCTYPE is not allowed"}},
    {"external DTD",
     "\n<!DOCTYPE cxr-triage SYSTEM \"http://example.invalid/x.dtd\">\n<cxr-triage/>",
     CXR_ERR_CONF_PARSE,
     2,
     {"DOCTYPE is not allowed"}},
    {"empty file", "", CXR_ERR_CONF_PARSE, 1, {"empty file"}},
    {"blank file", " \n\t\n", CXR_ERR_CONF_PARSE, 1, {"empty file"}},
};

START_TEST(test_load_bad_case)
{
    const struct bad_case *bc = &bad_cases[_i];
    enum cxr_status st;
    char err[CXR_ERRLEN] = "";
    struct cxr_conf *c = load_str(bc->xml, &st, err);
    cxr_conf_free(c);
    ck_assert_msg(st == bc->status, "%s: status %s, expected %s (%s)", bc->what,
                  cxr_status_name(st), cxr_status_name(bc->status), err);
    char where[64];
    snprintf(where, sizeof where, "test.xml:%d: ", bc->line);
    ck_assert_msg(strncmp(err, where, strlen(where)) == 0,
                  "%s: message '%s' does not start with '%s'", bc->what, err, where);
    for (int k = 0; k < 3 && bc->must[k]; k++)
        ck_assert_msg(strstr(err, bc->must[k]) != NULL, "%s: message '%s' lacks '%s'", bc->what,
                      err, bc->must[k]);
}
END_TEST

/* The external entity points at a FIFO holding a secret: if the parser ever
 * opened it, the open would block (the TCase timeout fails the test), and
 * the secret could not reach the message. */
START_TEST(test_load_external_entity_not_read)
{
    char *dir = cxr_test_tmpdir();
    char secret[PATH_MAX], fifo[PATH_MAX], xml[2 * PATH_MAX + 256];
    snprintf(secret, sizeof secret, "%s/secret.txt", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    ck_assert(cxr_test_write_file(secret, "TOPSECRET-42", 12));
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    const char *targets[] = {secret, fifo};
    for (int i = 0; i < 2; i++) {
        snprintf(xml, sizeof xml,
                 "<!DOCTYPE cxr-triage [<!ENTITY xxe SYSTEM \"file://%s\">]>\n"
                 "<cxr-triage><sr><manufacturer>&xxe;</manufacturer></sr></cxr-triage>",
                 targets[i]);
        enum cxr_status st;
        char err[CXR_ERRLEN];
        struct cxr_conf *c = load_str(xml, &st, err);
        ck_assert_ptr_null(c);
        ck_assert_int_eq(st, CXR_ERR_CONF_PARSE);
        ck_assert_ptr_null(strstr(err, "TOPSECRET"));
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_load_file_errors)
{
    char err[CXR_ERRLEN];
    struct cxr_conf *c = (struct cxr_conf *)1;
    ck_assert_int_eq(cxr_conf_load("/nonexistent/cxr-triage.xml", &c, err), CXR_ERR_NOT_FOUND);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/cxr-triage.xml"));

    char *dir = cxr_test_tmpdir();
    ck_assert_int_eq(cxr_conf_load(dir, &c, err), CXR_ERR_IO); /* a folder */
    ck_assert_ptr_null(c);

    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/empty.xml", dir);
    ck_assert(cxr_test_write_file(path, "", 0));
    ck_assert_int_eq(cxr_conf_load(path, &c, err), CXR_ERR_CONF_PARSE);
    ck_assert_ptr_nonnull(strstr(err, "empty.xml:1: empty file"));

    /* over the 1 MiB cap: refused before it is read or parsed */
    snprintf(path, sizeof path, "%s/big.xml", dir);
    size_t n = (1u << 20) + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    ck_assert(cxr_test_write_file(path, big, n));
    ck_assert_int_eq(cxr_conf_load(path, &c, err), CXR_ERR_LIMIT);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(cxr_conf_load_memory(big, n, "big.xml", &c, err), CXR_ERR_LIMIT);
    free(big);

    /* a bad value in a real file names the file as given */
    snprintf(path, sizeof path, "%s/cxr-triage.xml", dir);
    const char *doc = "<cxr-triage>\n<model>\n<threads>many</threads>\n</model>\n</cxr-triage>\n";
    ck_assert(cxr_test_write_file(path, doc, strlen(doc)));
    ck_assert_int_eq(cxr_conf_load(path, &c, err), CXR_ERR_CONF_VALUE);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%s:3: key 'model/threads': expected an integer 0..256, got 'many'",
             path);
    ck_assert_str_eq(err, want);

    ck_assert_int_eq(cxr_conf_load(path, NULL, err), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_conf_load(NULL, &c, NULL), CXR_ERR_INVALID_ARG);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* Odd spellings of values: whatever the loader's own checks accept must
 * also pass the XSD (a CXR_ERR_CONF_SCHEMA here would mean the two
 * disagree and a user gets libxml2's message instead of ours). */
START_TEST(test_loader_agrees_with_xsd)
{
    static const char *values[] = {
        "",
        " ",
        "0",
        "1",
        "+5",
        "-0",
        "007",
        "1.",
        ".5",
        "0.",
        "1.0",
        "1.000",
        "01",
        "1e-3",
        "0x10",
        "true",
        "TRUE",
        "false",
        "yes",
        "model",
        "Model",
        " model ",
        "cpu",
        "auto",
        "warn",
        "enhanced",
        "CR",
        "CR  DX",
        "cr",
        "A_B",
        "x y",
        "1.2.3",
        "0.0",
        "1.02",
        "é",
        "a\\b",
        "NaN",
        "INF",
        "-1",
        "65535",
        "65536",
        "2147483647",
        "2147483648",
        "256",
        "257",
        "0.99999999999999999999999",
        " 12 ",
        "\n  +12\n",
        "\n true \n",
        " cpu ",
        " comprehensive ",
        " CR DX ",
        " 0.5 ",
        " 1.2.3 ",
        " URGENT ",
        " a b ",
    };
    struct cxr_conf *d = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&d), CXR_OK);
    for (size_t k = 0; k < cxr_conf_key_count(); k++) {
        const char *path = cxr_conf_key_path(k);
        const char *slash = strchr(path, '/');
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            char xml[512];
            snprintf(xml, sizeof xml, "<cxr-triage><%.*s><%s>%s</%s></%.*s></cxr-triage>",
                     (int)(slash - path), path, slash + 1, values[v], slash + 1,
                     (int)(slash - path), path);
            enum cxr_status st;
            char err[CXR_ERRLEN];
            struct cxr_conf *c = load_str(xml, &st, err);
            ck_assert_msg(st == CXR_OK || st == CXR_ERR_CONF_VALUE, "%s = '%s': %s", path,
                          values[v], err);
            cxr_conf_free(c);
        }
    }
    cxr_conf_free(d);
}
END_TEST

/* Several threads loading at once (good and bad documents) get their own
 * messages: the error capture is per load, not process-global. */
static void *load_many(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < 40; i++) {
        char xml[256], err[CXR_ERRLEN], want[64];
        int threads = (int)((id * 40 + i) % 300);
        snprintf(xml, sizeof xml, "<cxr-triage>\n<model><threads>%d</threads></model></cxr-triage>",
                 threads);
        struct cxr_conf *c = NULL;
        enum cxr_status st = cxr_conf_load_memory(xml, strlen(xml), "t.xml", &c, err);
        if (threads <= 256) {
            if (st != CXR_OK || c->model.threads != threads)
                return (void *)1;
        } else {
            snprintf(want, sizeof want, "got '%d'", threads);
            if (st != CXR_ERR_CONF_VALUE || !strstr(err, want) || strncmp(err, "t.xml:2:", 8))
                return (void *)1;
        }
        cxr_conf_free(c);
        if (cxr_conf_load_memory("<cxr-triage><x/>", 16, "m.xml", &c, err) != CXR_ERR_CONF_PARSE ||
            strncmp(err, "m.xml:1: not well-formed", 24))
            return (void *)1;
    }
    return NULL;
}

START_TEST(test_load_threads)
{
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, load_many, (void *)i), 0);
    for (int i = 0; i < 4; i++) {
        void *r = (void *)1;
        pthread_join(t[i], &r);
        ck_assert_ptr_null(r);
    }
}
END_TEST

/* Numbers read and print with '.', whatever locale the host process set. */
START_TEST(test_load_locale_independent)
{
    const char *locs[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "de_DE.utf8"};
    const char *got = NULL;
    for (size_t i = 0; i < 3 && !got; i++)
        got = setlocale(LC_NUMERIC, locs[i]);
    if (!got) {
        printf("SKIP locale test: no comma-decimal locale installed\n");
        return;
    }
    enum cxr_status st;
    char err[CXR_ERRLEN], buf[64];
    struct cxr_conf *c = load_str("<cxr-triage><priority><urgent-threshold>0.75</urgent-threshold>"
                                  "</priority></cxr-triage>",
                                  &st, err);
    ck_assert_msg(st == CXR_OK, "%s", err);
    ck_assert_double_eq(c->priority.urgent_threshold, 0.75);
    ck_assert_int_eq(cxr_conf_get_text(c, "priority/urgent-threshold", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "0.75");
    cxr_conf_free(c);
    setlocale(LC_NUMERIC, "C");
}
END_TEST

/* ---- print → load ------------------------------------------------------- */

START_TEST(test_print_round_trip)
{
    const char *docs[] = {
        "<cxr-triage/>", ALL_SET,
        "<cxr-triage><priority><urgent-threshold>0.1</urgent-threshold>"
        "<priority-threshold>0.000001</priority-threshold></priority></cxr-triage>"};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        enum cxr_status st;
        char err[CXR_ERRLEN];
        struct cxr_conf *a = load_str(docs[i], &st, err);
        ck_assert_msg(st == CXR_OK, "%s", err);
        char *text = print_to_string(a);
        struct cxr_conf *b = load_str(text, &st, err);
        ck_assert_msg(st == CXR_OK, "printed config does not load: %s\n%s", err, text);
        ck_assert(cxr_conf_equal(a, b));
        ck_assert_double_eq(a->priority.priority_threshold, b->priority.priority_threshold);
        /* every key is printed, each with a comment */
        for (size_t k = 0; k < cxr_conf_key_count(); k++) {
            char open[96];
            snprintf(open, sizeof open, "<%s>", strchr(cxr_conf_key_path(k), '/') + 1);
            ck_assert_msg(strstr(text, open) != NULL, "missing %s", open);
        }
        size_t comments = 0;
        for (const char *p = text; (p = strstr(p, "<!--")); p++)
            comments++;
        ck_assert_uint_ge(comments, cxr_conf_key_count());
        free(text);
        cxr_conf_free(a);
        cxr_conf_free(b);
    }
    ck_assert_int_eq(cxr_conf_print(NULL, stdout), CXR_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_equal_detects_difference)
{
    struct cxr_conf *a = NULL, *b = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&a), CXR_OK);
    ck_assert_int_eq(cxr_conf_defaults(&b), CXR_OK);
    ck_assert(cxr_conf_equal(a, b));
    b->gate.view_positions.count = 1;
    ck_assert(!cxr_conf_equal(a, b));
    b->gate.view_positions.count = 2;
    b->priority.urgent_threshold = 0.5;
    ck_assert(!cxr_conf_equal(a, b));
    cxr_conf_free(a);
    cxr_conf_free(b);
}
END_TEST

/* ---- get_text, resolve_path --------------------------------------------- */

START_TEST(test_get_text)
{
    enum cxr_status st;
    char err[CXR_ERRLEN], buf[128];
    struct cxr_conf *c = load_str(ALL_SET, &st, err);
    ck_assert_msg(st == CXR_OK, "%s", err);
    ck_assert_int_eq(cxr_conf_get_text(c, "model/batch-size", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "32");
    ck_assert_int_eq(cxr_conf_get_text(c, "gate/body-parts", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "CHEST THORAX");
    ck_assert_int_eq(cxr_conf_get_text(c, "sr/sop-class", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "enhanced");
    ck_assert_int_eq(cxr_conf_get_text(c, "priority/urgent-threshold", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "0.9");
    ck_assert_int_eq(cxr_conf_get_text(c, "log/allow-phi", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "true");
    ck_assert_int_eq(cxr_conf_get_text(c, "model/nope", buf, sizeof buf), CXR_ERR_NOT_FOUND);
    ck_assert_int_eq(cxr_conf_get_text(c, "threads", buf, sizeof buf), CXR_ERR_NOT_FOUND);
    ck_assert_int_eq(cxr_conf_get_text(c, "sr/manufacturer", buf, 5), CXR_ERR_LIMIT);
    ck_assert_str_eq(buf, "ACME");
    cxr_conf_free(c);
    ck_assert_int_eq(cxr_conf_defaults(&c), CXR_OK);
    ck_assert_int_eq(cxr_conf_get_text(c, "priority/priority-threshold", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "model");
    cxr_conf_free(c);
}
END_TEST

START_TEST(test_resolve_path)
{
    char *dir = cxr_test_tmpdir();
    char sub[PATH_MAX], path[PATH_MAX + 32], err[CXR_ERRLEN];
    snprintf(sub, sizeof sub, "%s/etc", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/cxr-triage.xml", sub);
    const char *doc = "<cxr-triage><model><path>models/m.safetensors</path></model></cxr-triage>";
    ck_assert(cxr_test_write_file(path, doc, strlen(doc)));
    struct cxr_conf *c = NULL;
    ck_assert_msg(cxr_conf_load(path, &c, err) == CXR_OK, "%s", err);
    char *real = realpath(sub, NULL);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s/models/m.safetensors", real);
    char *got = cxr_conf_resolve_path(c, c->model.path);
    ck_assert_str_eq(got, want);
    free(got);
    snprintf(want, sizeof want, "%s/../models/x", real);
    got = cxr_conf_resolve_path(c, "../models/x");
    ck_assert_str_eq(got, want);
    free(got);
    got = cxr_conf_resolve_path(c, "/abs/model.safetensors");
    ck_assert_str_eq(got, "/abs/model.safetensors");
    free(got);
    got = cxr_conf_resolve_path(c, "");
    ck_assert_str_eq(got, "");
    free(got);
    ck_assert_ptr_null(cxr_conf_resolve_path(c, NULL));
    cxr_conf_free(c);

    /* defaults have no file: a relative path stays relative to the working directory */
    ck_assert_int_eq(cxr_conf_defaults(&c), CXR_OK);
    got = cxr_conf_resolve_path(c, "models/m.safetensors");
    ck_assert_str_eq(got, "models/m.safetensors");
    free(got);
    cxr_conf_free(c);
    free(real);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- committed artefacts agree with the table ------------------------- */

START_TEST(test_committed_xsd_matches)
{
    char *committed = repo_file("conf/cxr-triage.xsd");
    ck_assert_msg(strcmp(committed, cxr_conf_schema_xsd()) == 0,
                  "conf/cxr-triage.xsd is stale: regenerate with `cxr-triage config schema`");
    free(committed);
}
END_TEST

START_TEST(test_shipped_xml_is_printed_defaults)
{
    struct cxr_conf *d = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&d), CXR_OK);
    char *printed = print_to_string(d);
    char *shipped = repo_file("conf/cxr-triage.xml");
    ck_assert_msg(strcmp(printed, shipped) == 0,
                  "conf/cxr-triage.xml is stale: regenerate with `cxr-triage config defaults`");
    free(printed);
    free(shipped);
    cxr_conf_free(d);
}
END_TEST

/* The key table says which keys the node reads only at start; a reload that
 * changes one is named (cxr_conf_restart_changes), one that changes a key
 * read at each use is not, and a repeated section is named as a whole. */
static void collect_key(const char *key, void *ctx)
{
    char *out = ctx;
    size_t used = strlen(out);
    snprintf(out + used, 1024 - used, "%s;", key);
}

START_TEST(test_restart_only_keys)
{
    const char *before = "<cxr-triage><node><port>11112</port></node>"
                         "<allow><ae-title>CR01</ae-title></allow>"
                         "<destination><ae-title>PACS</ae-title></destination></cxr-triage>";
    /* changed: two restart-only node keys, a restart-only http key, the allow
     * list; and keys read at each use (a retry limit, a threshold, a
     * destination), which must not be named */
    const char *after = "<cxr-triage><node><port>11113</port><retry-max-attempts>3"
                        "</retry-max-attempts><tls-certificate>/etc/c.pem</tls-certificate>"
                        "</node><http><port>9000</port></http>"
                        "<priority><urgent-threshold>0.7</urgent-threshold></priority>"
                        "<allow><ae-title>CR02</ae-title></allow>"
                        "<destination><ae-title>ARCHIVE</ae-title><port>105</port></destination>"
                        "</cxr-triage>";
    struct cxr_conf *a = NULL, *b = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_conf_load_memory(before, strlen(before), "a.xml", &a, err) == CXR_OK, "%s",
                  err);
    ck_assert_msg(cxr_conf_load_memory(after, strlen(after), "b.xml", &b, err) == CXR_OK, "%s",
                  err);
    char changed[1024] = "";
    cxr_conf_restart_changes(a, b, collect_key, changed);
    ck_assert_str_eq(changed, "node/port;node/tls-certificate;http/port;allow;");
    changed[0] = '\0';
    cxr_conf_restart_changes(a, a, collect_key, changed);
    ck_assert_str_eq(changed, "");
    cxr_conf_free(a);
    cxr_conf_free(b);
    /* the docs say it */
    char *md = cxr_conf_doc_markdown();
    ck_assert_ptr_nonnull(strstr(md, "DICOM port (TCP). The node applies it at its next start"));
    free(md);
}
END_TEST

START_TEST(test_docs_table_matches)
{
    char *doc = repo_file("docs/configuration.md");
    const char *b = strstr(doc, "<!-- keys:begin -->\n");
    const char *e = strstr(doc, "<!-- keys:end -->");
    ck_assert_msg(b && e && b < e, "docs/configuration.md lacks the keys markers");
    b += strlen("<!-- keys:begin -->\n");
    char *md = cxr_conf_doc_markdown();
    ck_assert_ptr_nonnull(md);
    ck_assert_msg(
        strlen(md) == (size_t)(e - b) && strncmp(md, b, (size_t)(e - b)) == 0,
        "the key table in docs/configuration.md is stale: regenerate with `cxr-triage config doc`");
    /* one row per key */
    size_t rows = 0;
    for (const char *p = md; (p = strstr(p, "\n| `")); p++)
        rows++;
    ck_assert_uint_eq(rows, cxr_conf_key_count());
    free(md);
    free(doc);
}
END_TEST

/* xmllint is an independent validator of the committed schema. */
START_TEST(test_xmllint_validates)
{
    if (!have_xmllint())
        return;
    const char *src = cxr_test_source_dir();
    ck_assert_int_eq(cxr_test_sh("xmllint --noout --nonet --schema '%s/conf/cxr-triage.xsd' "
                                 "'%s/conf/cxr-triage.xml' 2>/dev/null",
                                 src, src),
                     0);
    char *dir = cxr_test_tmpdir();
    char path[PATH_MAX];
    /* a document with every key changed, as printed by us, is valid too */
    snprintf(path, sizeof path, "%s/all.xml", dir);
    ck_assert(cxr_test_write_file(path, ALL_SET, strlen(ALL_SET)));
    ck_assert_int_eq(
        cxr_test_sh("xmllint --noout --nonet --schema '%s/conf/cxr-triage.xsd' '%s' 2>/dev/null",
                    src, path),
        0);
    /* broken copies fail */
    static const char *breaks[] = {
        "s#<threads>0<#<threads>many<#", "s#<batch-size>8<#<batch-size>0<#",
        "s#<backend>auto<#<backend>gpu<#", "s#<model>#<model><thread>1</thread>#",
        "s#<urgent-threshold>model<#<urgent-threshold>1.5<#"};
    for (size_t i = 0; i < sizeof breaks / sizeof breaks[0]; i++) {
        snprintf(path, sizeof path, "%s/broken%zu.xml", dir, i);
        ck_assert_int_eq(
            cxr_test_sh("sed -e '%s' '%s/conf/cxr-triage.xml' > '%s'", breaks[i], src, path), 0);
        ck_assert_msg(
            cxr_test_sh(
                "xmllint --noout --nonet --schema '%s/conf/cxr-triage.xsd' '%s' 2>/dev/null", src,
                path) != 0,
            "xmllint accepted broken copy %zu", i);
        struct cxr_conf *c = NULL;
        char err[CXR_ERRLEN];
        ck_assert_int_ne(cxr_conf_load(path, &c, err), CXR_OK);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- repeated sections (<allow>, <destination>) ------------------------ */

static const char *REPEATED =
    "<cxr-triage>\n"
    "  <destination><name>pacs</name><ae-title>MAINPACS</ae-title><host>10.0.0.5</host>\n"
    "    <port>11112</port><tls>true</tls></destination>\n"
    "  <node><ae-title>TRIAGE1</ae-title><study-stable-seconds>0</study-stable-seconds></node>\n"
    "  <allow><ae-title>CR01</ae-title></allow>\n"
    "  <destination><host>archive.example.org</host></destination>\n"
    "  <allow><host>10.1.2.3</host></allow>\n"
    "  <allow><ae-title>DX02</ae-title><host>10.1.2.4</host></allow>\n"
    "</cxr-triage>\n";

START_TEST(test_repeated_sections_load)
{
    enum cxr_status st;
    char err[CXR_ERRLEN];
    struct cxr_conf *c = load_str(REPEATED, &st, err);
    ck_assert_msg(st == CXR_OK, "%s", err);
    ck_assert_str_eq(c->node.ae_title, "TRIAGE1");
    ck_assert_int_eq(c->node.study_stable_seconds, 0);
    ck_assert_uint_eq(c->destination_count, 2);
    ck_assert_str_eq(c->destinations[0].name, "pacs");
    ck_assert_str_eq(c->destinations[0].ae_title, "MAINPACS");
    ck_assert_str_eq(c->destinations[0].host, "10.0.0.5");
    ck_assert_int_eq(c->destinations[0].port, 11112);
    ck_assert(c->destinations[0].tls);
    /* omitted keys of an element take the element defaults */
    ck_assert_str_eq(c->destinations[1].name, "");
    ck_assert_str_eq(c->destinations[1].ae_title, "PACS");
    ck_assert_str_eq(c->destinations[1].host, "archive.example.org");
    ck_assert_int_eq(c->destinations[1].port, 104);
    ck_assert(!c->destinations[1].tls);
    ck_assert_uint_eq(c->allow_count, 3);
    ck_assert_str_eq(c->allow[0].ae_title, "CR01");
    ck_assert_str_eq(c->allow[0].host, "");
    ck_assert_str_eq(c->allow[1].host, "10.1.2.3");
    ck_assert_str_eq(c->allow[2].ae_title, "DX02");
    char buf[64];
    ck_assert_int_eq(cxr_conf_get_text(c, "destination/host", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "10.0.0.5");

    /* printed and loaded back: the same elements in the same order */
    char *text = print_to_string(c);
    struct cxr_conf *b = load_str(text, &st, err);
    ck_assert_msg(st == CXR_OK, "printed config does not load: %s\n%s", err, text);
    ck_assert(cxr_conf_equal(c, b));
    ck_assert_str_eq(b->destinations[1].host, "archive.example.org");
    /* one element fewer is a different configuration */
    b->destination_count = 1;
    ck_assert(!cxr_conf_equal(c, b));
    b->destination_count = 2;
    free(text);
    cxr_conf_free(b);
    cxr_conf_free(c);

    /* defaults: no element; get_text gives the element default */
    ck_assert_int_eq(cxr_conf_defaults(&c), CXR_OK);
    ck_assert_uint_eq(c->destination_count, 0);
    ck_assert_uint_eq(c->allow_count, 0);
    ck_assert_int_eq(cxr_conf_get_text(c, "destination/port", buf, sizeof buf), CXR_OK);
    ck_assert_str_eq(buf, "104");
    cxr_conf_free(c);
}
END_TEST

START_TEST(test_repeated_sections_errors)
{
    enum cxr_status st;
    char err[CXR_ERRLEN];
    /* a key twice inside one element */
    struct cxr_conf *c = load_str("<cxr-triage>\n<destination><host>a</host>\n<host>b</host>"
                                  "</destination>\n</cxr-triage>",
                                  &st, err);
    ck_assert_int_eq(st, CXR_ERR_CONF_SCHEMA);
    ck_assert_msg(strstr(err, "test.xml:3:") &&
                      strstr(err, "'destination/host' appears twice (first at line 2)"),
                  "%s", err);
    /* a bad value inside the second element names its line */
    c = load_str("<cxr-triage>\n<destination/>\n<destination>\n<port>0</port>\n</destination>\n"
                 "</cxr-triage>",
                 &st, err);
    ck_assert_int_eq(st, CXR_ERR_CONF_VALUE);
    ck_assert_msg(strstr(err, "test.xml:4:") && strstr(err, "destination/port"), "%s", err);
    /* an unknown key inside an element */
    c = load_str("<cxr-triage><allow><aet>X</aet></allow></cxr-triage>", &st, err);
    ck_assert_int_eq(st, CXR_ERR_CONF_SCHEMA);
    ck_assert_msg(strstr(err, "unknown key 'allow/aet'"), "%s", err);
    /* more elements than the struct holds */
    char doc[8192];
    size_t n = (size_t)snprintf(doc, sizeof doc, "<cxr-triage>");
    for (int i = 0; i <= CXR_CONF_MAX_DESTINATIONS; i++)
        n += (size_t)snprintf(doc + n, sizeof doc - n,
                              "<destination><port>%d</port></destination>\n", 1000 + i);
    snprintf(doc + n, sizeof doc - n, "</cxr-triage>");
    c = load_str(doc, &st, err);
    ck_assert_int_eq(st, CXR_ERR_CONF_SCHEMA);
    ck_assert_msg(strstr(err, "too many <destination> sections (at most 16)"), "%s", err);
    /* a section that is not repeatable still may appear only once */
    c = load_str("<cxr-triage><node/><node/></cxr-triage>", &st, err);
    ck_assert_int_eq(st, CXR_ERR_CONF_SCHEMA);
    ck_assert_msg(strstr(err, "section <node> appears twice"), "%s", err);
    (void)c;
}
END_TEST

/* The committed XSD accepts repeated sections and refuses a bad key in one. */
START_TEST(test_repeated_sections_xmllint)
{
    if (!have_xmllint())
        return;
    char *dir = cxr_test_tmpdir();
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/r.xml", dir);
    ck_assert(cxr_test_write_file(path, REPEATED, strlen(REPEATED)));
    const char *src = cxr_test_source_dir();
    ck_assert_int_eq(
        cxr_test_sh("xmllint --noout --nonet --schema '%s/conf/cxr-triage.xsd' '%s' 2>/dev/null",
                    src, path),
        0);
    const char *bad = "<cxr-triage><destination><prot>1</prot></destination></cxr-triage>";
    ck_assert(cxr_test_write_file(path, bad, strlen(bad)));
    ck_assert_int_ne(
        cxr_test_sh("xmllint --noout --nonet --schema '%s/conf/cxr-triage.xsd' '%s' 2>/dev/null",
                    src, path),
        0);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *conf_suite(void)
{
    Suite *s = suite_create("conf");
    TCase *tc = tcase_create("defaults");
    tcase_add_test(tc, test_defaults_values);
    tcase_add_test(tc, test_defaults_key_paths);
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_add_test(tc, test_load_shipped_equals_defaults);
    tcase_add_test(tc, test_load_empty_root_gives_defaults);
    tcase_add_test(tc, test_load_all_keys_set);
    tcase_add_test(tc, test_load_lexical_forms);
    tcase_add_test(tc, test_loader_agrees_with_xsd);
    tcase_add_test(tc, test_load_threads);
    tcase_add_test(tc, test_load_locale_independent);
    suite_add_tcase(s, tc);

    tc = tcase_create("load_errors");
    tcase_add_loop_test(tc, test_load_bad_case, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_load_file_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("security");
    tcase_set_timeout(tc, 30); /* a blocked open of the FIFO fails by timeout */
    tcase_add_test(tc, test_load_external_entity_not_read);
    suite_add_tcase(s, tc);

    tc = tcase_create("print");
    tcase_add_test(tc, test_print_round_trip);
    tcase_add_test(tc, test_equal_detects_difference);
    tcase_add_test(tc, test_get_text);
    tcase_add_test(tc, test_resolve_path);
    suite_add_tcase(s, tc);

    tc = tcase_create("repeated");
    tcase_add_test(tc, test_repeated_sections_load);
    tcase_add_test(tc, test_repeated_sections_errors);
    tcase_add_test(tc, test_repeated_sections_xmllint);
    suite_add_tcase(s, tc);

    tc = tcase_create("artefacts");
    tcase_add_test(tc, test_committed_xsd_matches);
    tcase_add_test(tc, test_shipped_xml_is_printed_defaults);
    tcase_add_test(tc, test_docs_table_matches);
    tcase_add_test(tc, test_restart_only_keys);
    tcase_add_test(tc, test_xmllint_validates);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(conf_suite()); }
