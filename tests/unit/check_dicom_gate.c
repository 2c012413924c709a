/* check_dicom_gate.c — the gating rules (cxr_dicom_gate), one table row per
 * rule: a base case (a CR PA chest that passes) with a few header values or
 * rule settings changed, and the verdict, reason and warning expected. The
 * reasons are what a radiographer reads, so their words are checked. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/dicom.h"
#include "test_util.h"

static void base_case(struct cxr_dicom_info *in, struct cxr_conf_gate *g)
{
    memset(in, 0, sizeof *in);
    strcpy(in->sop_class_uid, "1.2.840.10008.5.1.4.1.1.1");
    strcpy(in->modality, "CR");
    strcpy(in->body_part_examined, "CHEST");
    strcpy(in->view_position, "PA");
    strcpy(in->photometric_interpretation, "MONOCHROME1");
    in->rows = 2500;
    in->columns = 2048;
    in->bits_allocated = 16;
    in->bits_stored = 12;
    in->high_bit = 11;
    in->samples_per_pixel = 1;
    in->number_of_frames = 1;
    in->has_pixel_data = true;
    in->patient_age_years = 45;
    memset(g, 0, sizeof *g);
    g->modalities.count = 2;
    strcpy(g->modalities.items[0], "CR");
    strcpy(g->modalities.items[1], "DX");
    g->body_parts.count = 1;
    strcpy(g->body_parts.items[0], "CHEST");
    g->view_positions.count = 2;
    strcpy(g->view_positions.items[0], "PA");
    strcpy(g->view_positions.items[1], "AP");
    g->for_processing = CXR_CONF_FOR_PROCESSING_REJECT;
    g->min_rows = g->min_cols = 256;
    g->max_rows = g->max_cols = 8192;
    g->age_policy = CXR_CONF_AGE_REJECT;
}

/* "key=value" settings applied to the base case. */
static void apply(struct cxr_dicom_info *in, struct cxr_conf_gate *g, double *amin, double *amax,
                  const char *kv)
{
    char key[32];
    const char *eq = strchr(kv, '=');
    ck_assert_ptr_nonnull(eq);
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    const char *v = eq + 1;
#define STR(k, field)                                   \
    if (strcmp(key, k) == 0) {                          \
        snprintf(in->field, sizeof in->field, "%s", v); \
        return;                                         \
    }
    STR("sop", sop_class_uid)
    STR("modality", modality)
    STR("body", body_part_examined)
    STR("view", view_position)
    STR("pi", photometric_interpretation)
    STR("intent", presentation_intent_type)
#undef STR
    if (strcmp(key, "spp") == 0)
        in->samples_per_pixel = (uint16_t)atoi(v);
    else if (strcmp(key, "rows") == 0)
        in->rows = (uint16_t)atoi(v);
    else if (strcmp(key, "cols") == 0)
        in->columns = (uint16_t)atoi(v);
    else if (strcmp(key, "ba") == 0)
        in->bits_allocated = (uint16_t)atoi(v);
    else if (strcmp(key, "bs") == 0)
        in->bits_stored = (uint16_t)atoi(v);
    else if (strcmp(key, "frames") == 0)
        in->number_of_frames = atoi(v);
    else if (strcmp(key, "pixels") == 0)
        in->has_pixel_data = atoi(v) != 0;
    else if (strcmp(key, "age") == 0)
        in->patient_age_years = strcmp(v, "nan") ? atof(v) : NAN;
    else if (strcmp(key, "amin") == 0)
        *amin = strcmp(v, "nan") ? atof(v) : NAN;
    else if (strcmp(key, "amax") == 0)
        *amax = strcmp(v, "nan") ? atof(v) : NAN;
    else if (strcmp(key, "sc") == 0)
        g->allow_secondary_capture = atoi(v) != 0;
    else if (strcmp(key, "nobody") == 0)
        g->allow_missing_body_part = atoi(v) != 0;
    else if (strcmp(key, "noview") == 0)
        g->allow_missing_view_position = atoi(v) != 0;
    else if (strcmp(key, "fp") == 0)
        g->for_processing = strcmp(v, "analyse") == 0 ? CXR_CONF_FOR_PROCESSING_ANALYSE
                                                      : CXR_CONF_FOR_PROCESSING_REJECT;
    else if (strcmp(key, "agepolicy") == 0)
        g->age_policy = strcmp(v, "warn") == 0     ? CXR_CONF_AGE_WARN
                        : strcmp(v, "ignore") == 0 ? CXR_CONF_AGE_IGNORE
                                                   : CXR_CONF_AGE_REJECT;
    else
        ck_abort_msg("unknown key %s", key);
}

#define SOP_DXP "sop=1.2.840.10008.5.1.4.1.1.1.1"
#define SOP_DXR "sop=1.2.840.10008.5.1.4.1.1.1.1.1"
#define SOP_SC  "sop=1.2.840.10008.5.1.4.1.1.7"

static const struct gate_row {
    const char *set[4];
    bool pass;
    const char *reason;  /* substring of reason ("" = must be empty) */
    const char *warning; /* substring of warning ("" = must be empty) */
} k_gate_rows[] = {
    {{NULL}, true, "", ""},
    {{SOP_DXP, "modality=DX"}, true, "", ""},
    {{"sop=1.2.840.10008.5.1.4.1.1.2"}, false, "CT Image Storage is not a chest radiograph", ""},
    {{"sop=1.2.840.10008.5.1.4.1.1.88.33"},
     false,
     "Comprehensive SR Storage is not a chest radiograph",
     ""},
    {{"sop=1.2.3.4"}, false, "SOP class 1.2.3.4 is not a chest radiograph", ""},
    {{"sop="}, false, "no SOP Class UID", ""},
    {{SOP_DXR, "modality=DX"},
     false,
     "For Processing image (raw detector data, not what a radiologist sees)",
     ""},
    {{SOP_DXR, "modality=DX", "fp=analyse"}, true, "", "For Processing"},
    {{SOP_DXP, "modality=DX", "intent=FOR PROCESSING"}, false, "For Processing image", ""},
    {{SOP_SC}, false, "Secondary Capture", ""},
    {{SOP_SC, "sc=1", "modality=OT"}, true, "", ""},
    {{SOP_SC, "sc=1", "modality=US"}, false, "Secondary Capture with modality US", ""},
    {{SOP_SC, "sc=1", "pi=RGB", "spp=3"}, true, "", "colour Secondary Capture converted to grey"},
    {{"pi=RGB", "spp=3"}, false, "colour image", ""},
    {{"pi=PALETTE COLOR"}, false, "palette colour", ""},
    {{"pi="}, false, "no PhotometricInterpretation", ""},
    {{"modality=MR"}, false, "modality MR is not admitted (allowed: CR DX)", ""},
    {{"modality="}, false, "no Modality", ""},
    {{"body=HAND"}, false, "body part HAND is not a chest", ""},
    {{"body=chest"}, true, "", ""},
    {{"body="}, false, "body part not stated", ""},
    {{"body=", "nobody=1"}, true, "", ""},
    {{"view=LL"}, false, "lateral view (ViewPosition LL)", ""},
    {{"view=LATERAL"}, false, "lateral view (ViewPosition LATERAL)", ""},
    {{"view=OBL"}, false, "view position OBL is not admitted (allowed: PA AP)", ""},
    {{"view="}, false, "view position not stated", ""},
    {{"view=", "noview=1"}, true, "", ""},
    {{"frames=3"}, false, "multi-frame image (3 frames)", ""},
    {{"pixels=0"}, false, "no pixel data", ""},
    {{"rows=100"}, false, "image too small", ""},
    {{"cols=10000"}, false, "image too large", ""},
    {{"rows=0"}, false, "image size missing", ""},
    {{"ba=32"}, false, "BitsAllocated 32 not supported", ""},
    {{"bs=17"}, false, "inconsistent bit depth", ""},
    {{"age=4", "amin=18", "amax=90"}, false, "below the intended minimum of 18 years", ""},
    {{"age=95", "amin=18", "amax=90"}, false, "above the intended maximum of 90 years", ""},
    {{"age=4", "amin=18", "agepolicy=warn"}, true, "", "patient age 4.0 years is below"},
    {{"age=4", "amin=18", "agepolicy=ignore"}, true, "", ""},
    /* issue 16: an unknown age is outside the stated population too */
    {{"age=nan", "amin=18", "amax=90"},
     false,
     "patient age unknown (no Patient's Age or Birth Date): the model is meant for patients "
     "aged 18 to 90 years (gate/age-policy)",
     ""},
    {{"age=nan", "amin=1", "amax=5", "agepolicy=warn"}, true, "", "patient age unknown"},
    {{"age=nan", "amin=1", "amax=5", "agepolicy=ignore"}, true, "", ""},
    {{"age=nan", "amin=nan", "amax=nan"}, true, "", ""},
    {{"age=4", "amin=nan", "amax=nan"}, true, "", ""},
};

START_TEST(test_gate_rule)
{
    const struct gate_row *r = &k_gate_rows[_i];
    struct cxr_dicom_info in;
    struct cxr_conf_gate g;
    double amin = NAN, amax = NAN;
    base_case(&in, &g);
    for (int k = 0; k < 4 && r->set[k]; k++)
        apply(&in, &g, &amin, &amax, r->set[k]);
    struct cxr_dicom_gate_result res;
    memset(&res, 0x5A, sizeof res);
    cxr_dicom_gate(&in, &g, amin, amax, &res);
    ck_assert_msg(res.pass == r->pass, "row %d: pass=%d reason='%s'", _i, res.pass, res.reason);
    if (r->reason[0])
        ck_assert_msg(strstr(res.reason, r->reason), "row %d: reason '%s' lacks '%s'", _i,
                      res.reason, r->reason);
    else
        ck_assert_msg(res.reason[0] == '\0', "row %d: unexpected reason '%s'", _i, res.reason);
    if (r->warning[0])
        ck_assert_msg(strstr(res.warning, r->warning), "row %d: warning '%s' lacks '%s'", _i,
                      res.warning, r->warning);
    else
        ck_assert_msg(res.warning[0] == '\0', "row %d: unexpected warning '%s'", _i, res.warning);
}
END_TEST

static Suite *gate_suite(void)
{
    Suite *s = suite_create("dicom_gate");
    TCase *tc = tcase_create("gate");
    tcase_add_loop_test(tc, test_gate_rule, 0, (int)(sizeof k_gate_rows / sizeof k_gate_rows[0]));
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(gate_suite()); }
