/* check_dicom_net_rq.c — cxr_dicom_assoc_rq_check, the structure check of an
 * A-ASSOCIATE-RQ made before DCMTK 3.6.7 parses it (DCMTK leaks on several
 * malformed requests; dicom/src/assoc_rq.c lists where): a table of
 * well-formed requests that must pass (so that real peers keep working) and
 * of malformed ones that must be refused with the PS3.8 Table 9-26 A-ABORT
 * reason and a reason text; every truncation of a rich request; and every
 * single-byte corruption of it, which must never read outside the buffer
 * (ASan in `make test-asan`). The same requests over the wire are in
 * check_dicom_net.c (test_malformed_requests_refused). */
#include "dicom_net_fixture.h"

#define CT_STORAGE "1.2.840.10008.5.1.4.1.1.2"
#define IMPLICIT   "1.2.840.10008.1.2"
#define EXPLICIT   "1.2.840.10008.1.2.1"

/* Builders: each writes one complete request into p. */
typedef void (*build_fn)(struct pdu *p);

static void user_info_basic(struct pdu *p)
{
    size_t ui = pdu_open(p, 0x50);
    rq_user_basics(p);
    pdu_close(p, ui);
}

/* Standard start: header, application context, one context. */
static void start(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    rq_context(p, 1, "1.2.840.10008.1.1", IMPLICIT);
}

/* A context with the given sub-items written by the caller between
 * ctx_open and pdu_close. */
static size_t ctx_open(struct pdu *p, uint8_t id)
{
    size_t at = pdu_open(p, 0x20);
    uint8_t h[4] = {id, 0, 0, 0};
    pdu_put(p, h, 4);
    return at;
}

/* A user identity sub-item (0x58). */
static void identity(struct pdu *p, uint8_t type, const char *primary, const char *secondary)
{
    size_t at = pdu_open(p, 0x58);
    pdu_u8(p, type);
    pdu_u8(p, 0);
    pdu_be16(p, (uint16_t)strlen(primary));
    pdu_put(p, primary, strlen(primary));
    pdu_be16(p, (uint16_t)strlen(secondary));
    pdu_put(p, secondary, strlen(secondary));
    pdu_close(p, at);
}

/* Everything a request may carry: several contexts with several transfer
 * syntaxes, asynchronous operations window, role selection, version name,
 * SOP class extended negotiation, common extended negotiation, user
 * identity (username and passcode), an unknown user sub-item and an
 * unknown item. */
static void ok_rich(struct pdu *p)
{
    rq_begin(p, "MODALITY", "CXRTEST");
    rq_app_context(p);
    for (uint8_t id = 1; id <= 5; id += 2) {
        size_t at = ctx_open(p, id);
        pdu_text(p, 0x30, CT_STORAGE);
        pdu_text(p, 0x40, EXPLICIT);
        pdu_text(p, 0x40, IMPLICIT);
        pdu_text(p, 0x40, "1.2.840.10008.1.2.4.70");
        pdu_close(p, at);
    }
    size_t ui = pdu_open(p, 0x50);
    rq_user_basics(p);
    size_t at = pdu_open(p, 0x53);
    pdu_be16(p, 1);
    pdu_be16(p, 1);
    pdu_close(p, at);
    at = pdu_open(p, 0x54);
    pdu_be16(p, (uint16_t)strlen(CT_STORAGE));
    pdu_put(p, CT_STORAGE, strlen(CT_STORAGE));
    pdu_u8(p, 1);
    pdu_u8(p, 0);
    pdu_close(p, at);
    pdu_text(p, 0x55, "CXRTEST_1");
    at = pdu_open(p, 0x56);
    pdu_be16(p, (uint16_t)strlen(CT_STORAGE));
    pdu_put(p, CT_STORAGE, strlen(CT_STORAGE));
    pdu_put(p, "\1\0\1", 3);
    pdu_close(p, at);
    at = pdu_open(p, 0x57);
    pdu_be16(p, (uint16_t)strlen(CT_STORAGE));
    pdu_put(p, CT_STORAGE, strlen(CT_STORAGE));
    pdu_be16(p, 0);
    pdu_be16(p, 0);
    pdu_close(p, at);
    identity(p, 2, "user", "secret");
    pdu_text(p, 0x60, "unknown user sub-item");
    pdu_close(p, ui);
    pdu_text(p, 0x70, "unknown item");
    rq_end(p);
}

static void ok_minimal(struct pdu *p) { rq_minimal(p, "SCU", "CXRTEST"); }

static void ok_uid_64(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_fill(p, 0x30, 64);
    pdu_fill(p, 0x40, 64);
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void ok_no_user_info(struct pdu *p) /* PS3.8 wants one; DCMTK copes without */
{
    start(p);
    rq_end(p);
}

static void ok_identity_username(struct pdu *p)
{
    start(p);
    size_t ui = pdu_open(p, 0x50);
    rq_user_basics(p);
    identity(p, 1, "user", "");
    pdu_close(p, ui);
    rq_end(p);
}

static void ok_ext_neg_without_info(struct pdu *p)
{
    start(p);
    size_t ui = pdu_open(p, 0x50);
    rq_user_basics(p);
    size_t at = pdu_open(p, 0x56);
    pdu_be16(p, (uint16_t)strlen(CT_STORAGE));
    pdu_put(p, CT_STORAGE, strlen(CT_STORAGE));
    pdu_close(p, at);
    pdu_close(p, ui);
    rq_end(p);
}

/* ---- malformed: presentation contexts ---- */

static void bad_no_transfer_syntax(struct pdu *p) /* DCMTK leaks 272 B */
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_text(p, 0x30, "1.2.840.10008.1.1");
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void bad_no_abstract_syntax(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_text(p, 0x40, IMPLICIT);
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void bad_two_abstract_syntaxes(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_text(p, 0x30, "1.2.840.10008.1.1");
    pdu_text(p, 0x30, CT_STORAGE);
    pdu_text(p, 0x40, IMPLICIT);
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void abstract_syntax_of(struct pdu *p, size_t len)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_fill(p, 0x30, len);
    if (len < 60000)
        pdu_text(p, 0x40, IMPLICIT);
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}
static void bad_abstract_syntax_65(struct pdu *p) { abstract_syntax_of(p, 65); }
/* the largest that fits a context item: DCMTK leaks 32 B on it */
static void bad_abstract_syntax_64k(struct pdu *p) { abstract_syntax_of(p, 0xFFFF - 8); }

static void bad_transfer_syntax_65(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_text(p, 0x30, "1.2.840.10008.1.1");
    pdu_text(p, 0x40, IMPLICIT);
    pdu_fill(p, 0x40, 65);
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void bad_empty_transfer_syntax(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_text(p, 0x30, "1.2.840.10008.1.1");
    pdu_text(p, 0x40, "");
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void bad_context_too_short(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = pdu_open(p, 0x20);
    pdu_be16(p, 0x0100);
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void bad_context_sub_item_overruns(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = ctx_open(p, 1);
    pdu_text(p, 0x30, "1.2.840.10008.1.1");
    size_t ts = pdu_open(p, 0x40);
    pdu_put(p, IMPLICIT, strlen(IMPLICIT));
    pdu_close(p, ts);
    be16(p->b + ts + 2, 200); /* claims more than the context holds */
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

static void bad_answer_context_in_request(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    rq_app_context(p);
    size_t at = pdu_open(p, 0x21);
    uint8_t h[4] = {1, 0, 0, 0};
    pdu_put(p, h, 4);
    pdu_text(p, 0x40, IMPLICIT);
    pdu_close(p, at);
    user_info_basic(p);
    rq_end(p);
}

/* ---- malformed: application context, items ---- */

static void bad_application_context_65(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    pdu_fill(p, 0x10, 65);
    rq_context(p, 1, "1.2.840.10008.1.1", IMPLICIT);
    user_info_basic(p);
    rq_end(p);
}

static void bad_two_application_contexts(struct pdu *p)
{
    start(p);
    rq_app_context(p);
    user_info_basic(p);
    rq_end(p);
}

static void bad_item_overruns_pdu(struct pdu *p)
{
    start(p);
    size_t at = pdu_open(p, 0x50);
    rq_user_basics(p);
    pdu_close(p, at);
    be16(p->b + at + 2, 0x4000);
    rq_end(p);
}

static void bad_item_header_cut(struct pdu *p)
{
    start(p);
    user_info_basic(p);
    pdu_u8(p, 0x50);
    pdu_u8(p, 0);
    rq_end(p);
}

/* ---- malformed: user information ---- */

static void bad_two_user_info_items(struct pdu *p)
{
    start(p);
    user_info_basic(p);
    user_info_basic(p);
    rq_end(p);
}

static void user_info_with(struct pdu *p, void (*sub)(struct pdu *))
{
    start(p);
    size_t ui = pdu_open(p, 0x50);
    rq_user_basics(p);
    sub(p);
    pdu_close(p, ui);
    rq_end(p);
}

static void sub_max_length_2(struct pdu *p)
{
    size_t at = pdu_open(p, 0x51);
    pdu_be16(p, 1024);
    pdu_close(p, at);
}
static void bad_max_length_2(struct pdu *p)
{
    start(p);
    size_t ui = pdu_open(p, 0x50);
    sub_max_length_2(p);
    pdu_close(p, ui);
    rq_end(p);
}

static void sub_impl_uid_65(struct pdu *p) { pdu_fill(p, 0x52, 65); }
static void bad_implementation_uid_65(struct pdu *p) { user_info_with(p, sub_impl_uid_65); }

static void sub_role_length(struct pdu *p)
{
    size_t at = pdu_open(p, 0x54);
    pdu_be16(p, 40); /* the UID is shorter than that */
    pdu_put(p, CT_STORAGE, strlen(CT_STORAGE));
    pdu_u8(p, 1);
    pdu_u8(p, 0);
    pdu_close(p, at);
}
static void bad_role_selection_length(struct pdu *p) { user_info_with(p, sub_role_length); }

static void sub_ext_neg_overrun(struct pdu *p) /* DCMTK leaks 56 B */
{
    size_t at = pdu_open(p, 0x56);
    pdu_be16(p, 200);
    pdu_put(p, CT_STORAGE, strlen(CT_STORAGE));
    pdu_close(p, at);
}
static void bad_ext_neg_uid_overruns(struct pdu *p) { user_info_with(p, sub_ext_neg_overrun); }

static void sub_ext_neg_short(struct pdu *p)
{
    size_t at = pdu_open(p, 0x56);
    pdu_u8(p, 0);
    pdu_close(p, at);
}
static void bad_ext_neg_too_short(struct pdu *p) { user_info_with(p, sub_ext_neg_short); }

static void sub_identity_twice(struct pdu *p)
{
    identity(p, 1, "first", "");
    identity(p, 1, "second", "");
}
static void bad_identity_twice(struct pdu *p) { user_info_with(p, sub_identity_twice); }

static void sub_identity_short(struct pdu *p)
{
    size_t at = pdu_open(p, 0x58);
    pdu_u8(p, 1);
    pdu_u8(p, 0);
    pdu_be16(p, 0);
    pdu_close(p, at);
}
static void bad_identity_too_short(struct pdu *p) { user_info_with(p, sub_identity_short); }

static void sub_identity_primary_overrun(struct pdu *p)
{
    size_t at = pdu_open(p, 0x58);
    pdu_u8(p, 1);
    pdu_u8(p, 0);
    pdu_be16(p, 300);
    pdu_put(p, "user", 4);
    pdu_be16(p, 0);
    pdu_close(p, at);
}
static void bad_identity_primary_overruns(struct pdu *p)
{
    user_info_with(p, sub_identity_primary_overrun);
}

static void sub_identity_slack(struct pdu *p)
{
    size_t at = pdu_open(p, 0x58);
    pdu_u8(p, 1);
    pdu_u8(p, 0);
    pdu_be16(p, 4);
    pdu_put(p, "user", 4);
    pdu_be16(p, 0);
    pdu_put(p, "slack", 5); /* bytes no field accounts for */
    pdu_close(p, at);
}
static void bad_identity_fields_do_not_fill(struct pdu *p)
{
    user_info_with(p, sub_identity_slack);
}

static void sub_identity_type1_secondary(struct pdu *p) { identity(p, 1, "user", "secret"); }
static void bad_identity_secondary_for_type_1(struct pdu *p)
{
    user_info_with(p, sub_identity_type1_secondary);
}

static void sub_identity_answer(struct pdu *p)
{
    size_t at = pdu_open(p, 0x59);
    pdu_be16(p, 0);
    pdu_close(p, at);
}
static void bad_identity_answer_in_request(struct pdu *p)
{
    user_info_with(p, sub_identity_answer);
}

static void sub_overrun(struct pdu *p)
{
    size_t at = pdu_open(p, 0x52);
    pdu_put(p, "1.2.3", 5);
    pdu_close(p, at);
    be16(p->b + at + 2, 100);
}
static void bad_user_sub_item_overruns(struct pdu *p) { user_info_with(p, sub_overrun); }

/* ---- malformed: the PDU itself ---- */

static void bad_length_field(struct pdu *p)
{
    ok_minimal(p);
    be32(p->b + 2, (uint32_t)(p->n - 6 + 10));
}

static void bad_fixed_fields_cut(struct pdu *p)
{
    rq_begin(p, "SCU", "CXRTEST");
    p->n = 6 + 40;
    rq_end(p);
}

static void bad_release_request(struct pdu *p)
{
    uint8_t rq[10] = {0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0};
    p->n = 0;
    pdu_put(p, rq, sizeof rq);
}

static void bad_http(struct pdu *p)
{
    p->n = 0;
    pdu_put(p, "GET / HTTP/1.1\r\n\r\n", 18);
}

static void bad_empty(struct pdu *p) { p->n = 0; }

static const struct {
    const char *name;
    build_fn build;
    int reason;       /* 0 = accepted */
    const char *says; /* in the reason text */
} cases[] = {
    {"minimal request", ok_minimal, 0, NULL},
    {"everything a request may carry", ok_rich, 0, NULL},
    {"UIDs of exactly 64 bytes", ok_uid_64, 0, NULL},
    {"no user information item", ok_no_user_info, 0, NULL},
    {"user identity: username only", ok_identity_username, 0, NULL},
    {"extended negotiation without application info", ok_ext_neg_without_info, 0, NULL},
    {"context without transfer syntax", bad_no_transfer_syntax, 6, "no transfer syntax"},
    {"context without abstract syntax", bad_no_abstract_syntax, 6, "no abstract syntax"},
    {"context with two abstract syntaxes", bad_two_abstract_syntaxes, 6, "more than one"},
    {"abstract syntax of 65 bytes", bad_abstract_syntax_65, 6, "abstract syntax"},
    {"abstract syntax of 65527 bytes", bad_abstract_syntax_64k, 6, "65527 bytes"},
    {"transfer syntax of 65 bytes", bad_transfer_syntax_65, 6, "transfer syntax"},
    {"empty transfer syntax", bad_empty_transfer_syntax, 6, "0 bytes"},
    {"context item of 2 bytes", bad_context_too_short, 6, "at least 4"},
    {"sub-item overruns its context", bad_context_sub_item_overruns, 6, "claims 200 bytes"},
    {"answer context (0x21) in a request", bad_answer_context_in_request, 4, "0x21"},
    {"application context of 65 bytes", bad_application_context_65, 6, "application context"},
    {"two application contexts", bad_two_application_contexts, 6, "more than one"},
    {"item overruns the PDU", bad_item_overruns_pdu, 6, "left in the PDU"},
    {"item header cut", bad_item_header_cut, 6, "header cut"},
    {"two user information items", bad_two_user_info_items, 6, "more than one user information"},
    {"maximum length of 2 bytes", bad_max_length_2, 6, "maximum length"},
    {"implementation class UID of 65 bytes", bad_implementation_uid_65, 6, "implementation"},
    {"role selection lengths disagree", bad_role_selection_length, 6, "role selection"},
    {"extended negotiation UID overruns", bad_ext_neg_uid_overruns, 6, "extended negotiation"},
    {"extended negotiation of 1 byte", bad_ext_neg_too_short, 6, "extended negotiation"},
    {"two user identity sub-items", bad_identity_twice, 6, "more than one user identity"},
    {"user identity of 4 bytes", bad_identity_too_short, 6, "at least 6"},
    {"user identity primary field overruns", bad_identity_primary_overruns, 6, "overruns"},
    {"user identity with unaccounted bytes", bad_identity_fields_do_not_fill, 6, "do not fill"},
    {"user identity type 1 with a passcode", bad_identity_secondary_for_type_1, 6, "type 1"},
    {"user identity answer (0x59) in a request", bad_identity_answer_in_request, 4, "0x59"},
    {"user sub-item overruns its item", bad_user_sub_item_overruns, 6, "left in the item"},
    {"PDU length field disagrees", bad_length_field, 6, "PDU length"},
    {"fixed fields cut", bad_fixed_fields_cut, 6, "fixed fields"},
    {"A-RELEASE-RQ first", bad_release_request, 2, "0x05"},
    {"an HTTP request", bad_http, 1, "0x47"},
    {"nothing", bad_empty, 1, "shorter than a PDU header"},
};

static struct pdu g_pdu;

START_TEST(test_table)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&g_pdu, 0, sizeof g_pdu);
        cases[i].build(&g_pdu);
        char why[256];
        int r = cxr_dicom_assoc_rq_check(g_pdu.b, g_pdu.n, why, sizeof why);
        ck_assert_msg(r == cases[i].reason, "%s: reason %d, want %d (%s)", cases[i].name, r,
                      cases[i].reason, why);
        if (cases[i].says)
            ck_assert_msg(strstr(why, cases[i].says), "%s: reason text '%s' lacks '%s'",
                          cases[i].name, why, cases[i].says);
        else
            ck_assert_str_eq(why, "");
    }
}
END_TEST

/* Every prefix of a rich request, in a buffer of exactly that size (ASan
 * sees any read past it): with its length field left as it was (always
 * refused: the PDU is cut) and set to the prefix (refused unless the cut
 * falls between items). */
START_TEST(test_truncations)
{
    struct pdu *p = &g_pdu;
    ok_rich(p);
    size_t full = p->n;
    for (size_t len = 0; len < full; len++) {
        uint8_t *cut = malloc(len ? len : 1);
        memcpy(cut, p->b, len);
        int r = cxr_dicom_assoc_rq_check(cut, len, NULL, 0);
        ck_assert_msg(r != 0, "a request cut to %zu of %zu bytes passed", len, full);
        if (len >= 6)
            be32(cut + 2, (uint32_t)(len - 6));
        r = cxr_dicom_assoc_rq_check(cut, len, NULL, 0);
        ck_assert(r == 0 || r == 1 || r == 6);
        free(cut);
    }
}
END_TEST

/* Each byte of a rich request set to 0x00, 0x7F and 0xFF in turn: any
 * verdict is fine, reading outside the PDU is not (ASan). */
START_TEST(test_corruptions)
{
    struct pdu *p = &g_pdu;
    ok_rich(p);
    size_t n = p->n;
    uint8_t *buf = malloc(n);
    const uint8_t values[] = {0x00, 0x7F, 0xFF};
    size_t passed = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(buf, p->b, n);
            buf[i] = values[v];
            char why[256];
            int r = cxr_dicom_assoc_rq_check(buf, n, why, sizeof why);
            ck_assert(r == 0 || r == 1 || r == 2 || r == 4 || r == 6);
            ck_assert(r == 0 || why[0]);
            passed += r == 0;
        }
    free(buf);
    /* AE titles, reserved bytes, UID characters: many corruptions are
     * still well-formed; length fields are not */
    ck_assert_uint_gt(passed, 0);
    ck_assert_uint_lt(passed, 3 * n);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dicom_net_rq");
    TCase *tc = tcase_create("check");
    tcase_add_test(tc, test_table);
    tcase_add_test(tc, test_truncations);
    tcase_add_test(tc, test_corruptions);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
