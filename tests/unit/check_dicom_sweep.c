/* check_dicom_sweep.c — robustness: every file of ../shared/data/dicom-cxr and
 * ../shared/data/dicom-corpus (403 real files, some malformed, some hostile)
 * goes through load (file and memory) → gate → present. Each must give an
 * image or a clear error (a known status, a message naming the file); none
 * may crash or hang (run it under ASan+UBSan too). All 16 chest files must
 * pass the gate and present. Prints a table of outcomes. Skips when
 * ../shared is absent.
 */
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/dicom.h"
#include "test_util.h"

#define MAX_FILES 2048

static char *g_files[MAX_FILES];
static int g_nfiles;

static int collect(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (type != FTW_F)
        return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "MANIFEST.tsv") == 0 || strcmp(base, "PROVENANCE.md") == 0)
        return 0;
    if (g_nfiles < MAX_FILES)
        g_files[g_nfiles++] = strdup(path);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_files(const char *sub)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", cxr_test_shared_data(), sub);
    g_nfiles = 0;
    ck_assert_int_eq(nftw(dir, collect, 16, FTW_PHYS), 0);
    qsort(g_files, (size_t)g_nfiles, sizeof g_files[0], cmp_str);
}

static void free_files(void)
{
    for (int i = 0; i < g_nfiles; i++)
        free(g_files[i]);
    g_nfiles = 0;
}

/* Gate rules the product ships with, plus Secondary Capture and missing
 * body part / view admitted (the chest set has both). */
static void chest_rules(struct cxr_conf_gate *g)
{
    memset(g, 0, sizeof *g);
    g->modalities.count = 2;
    strcpy(g->modalities.items[0], "CR");
    strcpy(g->modalities.items[1], "DX");
    g->body_parts.count = 1;
    strcpy(g->body_parts.items[0], "CHEST");
    g->view_positions.count = 2;
    strcpy(g->view_positions.items[0], "PA");
    strcpy(g->view_positions.items[1], "AP");
    g->allow_secondary_capture = true;
    g->allow_missing_body_part = true;
    g->allow_missing_view_position = true;
    g->for_processing = CXR_CONF_FOR_PROCESSING_REJECT;
    g->min_rows = g->min_cols = 256;
    g->max_rows = g->max_cols = 8192;
    g->age_policy = CXR_CONF_AGE_WARN;
}

/* ------------------------------------------------------------------ outcome table */

struct outcome {
    char key[160];
    int count;
};
static struct outcome g_out[512];
static int g_nout;

/* "STATUS: reason" with the file name and numbers taken out. */
static void count(const char *stage, enum cxr_status st, const char *text, const char *path)
{
    char norm[160];
    const char *t = text;
    size_t plen = strlen(path);
    if (strncmp(t, path, plen) == 0)
        t += plen;
    while (*t == ':' || *t == ' ')
        t++;
    size_t k = 0;
    k += (size_t)snprintf(norm, sizeof norm, "%-7s %-22s ", stage, cxr_status_name(st));
    for (; *t && k + 1 < sizeof norm; t++) {
        if (*t >= '0' && *t <= '9') {
            if (k == 0 || norm[k - 1] != 'N')
                norm[k++] = 'N';
        } else {
            norm[k++] = *t;
        }
    }
    norm[k] = '\0';
    for (int i = 0; i < g_nout; i++)
        if (strcmp(g_out[i].key, norm) == 0) {
            g_out[i].count++;
            return;
        }
    if (g_nout < (int)(sizeof g_out / sizeof g_out[0])) {
        snprintf(g_out[g_nout].key, sizeof g_out[g_nout].key, "%s", norm);
        g_out[g_nout++].count = 1;
    }
}

static int cmp_out(const void *a, const void *b)
{
    const struct outcome *x = a, *y = b;
    return y->count != x->count ? y->count - x->count : strcmp(x->key, y->key);
}

static void print_outcomes(const char *title, int files)
{
    qsort(g_out, (size_t)g_nout, sizeof g_out[0], cmp_out);
    printf("\n%s: %d files\n%6s  %s\n", title, files, "count", "stage / status / reason");
    for (int i = 0; i < g_nout; i++)
        printf("%6d  %s\n", g_out[i].count, g_out[i].key);
    g_nout = 0;
}

/* ------------------------------------------------------------------ one file */

static bool known_status(enum cxr_status st)
{
    switch (st) {
    case CXR_ERR_DICOM_PARSE:
    case CXR_ERR_DICOM_MISSING:
    case CXR_ERR_DICOM_DECODE:
    case CXR_ERR_DICOM_TS:
    case CXR_ERR_UNSUPPORTED:
    case CXR_ERR_LIMIT: return true;
    default: return false;
    }
}

/* Runs one file through the pipeline; returns true when it presented. */
static bool run_file(const char *path, const struct cxr_conf_gate *rules, bool *gate_pass)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_dicom_instance *inst = NULL;
    enum cxr_status st = cxr_dicom_instance_load_file(path, &inst, err);

    /* the memory door must agree with the file door */
    size_t n = 0;
    void *bytes = cxr_test_read_file(path, &n);
    ck_assert_ptr_nonnull(bytes);
    struct cxr_dicom_instance *minst = NULL;
    char merr[CXR_ERRLEN] = "";
    enum cxr_status mst = cxr_dicom_instance_load_memory(bytes, n, path, &minst, merr);
    free(bytes);
    ck_assert_msg(mst == st, "%s: file gives %d (%s), memory %d (%s)", path, st, err, mst, merr);
    cxr_dicom_instance_free(minst);

    if (st != CXR_OK) {
        ck_assert_msg(known_status(st), "%s: load status %d (%s)", path, st, err);
        ck_assert_ptr_null(inst);
        ck_assert_msg(strstr(err, path), "%s: message does not name the file: %s", path, err);
        count("load", st, err, path);
        *gate_pass = false;
        return false;
    }

    struct cxr_dicom_gate_result gr;
    cxr_dicom_gate(cxr_dicom_instance_info(inst), rules, 0.0, 120.0, &gr);
    *gate_pass = gr.pass;
    if (!gr.pass) {
        ck_assert_msg(gr.reason[0] != '\0', "%s: rejected without a reason", path);
        count("gate", CXR_ERR_DICOM_GATE, gr.reason, path);
    }

    /* every loaded file is presented, admitted or not: the decoder must cope */
    struct cxr_dicom_image img;
    st = cxr_dicom_instance_present(inst, &img, err);
    bool ok = st == CXR_OK;
    if (ok) {
        const struct cxr_dicom_info *in = cxr_dicom_instance_info(inst);
        ck_assert_ptr_nonnull(img.pixels);
        ck_assert_int_eq(img.width, in->columns);
        ck_assert_int_eq(img.height, in->rows);
        ck_assert_msg(img.voi_used[0] != '\0', "%s: voi_used empty", path);
        count("present", CXR_OK, "", path);
        cxr_dicom_image_release(&img);
    } else {
        ck_assert_msg(known_status(st), "%s: present status %d (%s)", path, st, err);
        ck_assert_ptr_null(img.pixels);
        ck_assert_msg(strstr(err, path), "%s: message does not name the file: %s", path, err);
        count("present", st, err, path);
    }
    cxr_dicom_instance_free(inst);
    return ok;
}

/* ------------------------------------------------------------------ tests */

START_TEST(test_sweep_chest_set_all_present)
{
    if (!cxr_test_have_shared("dicom-cxr", "chest set sweep"))
        return;
    struct cxr_conf_gate rules;
    chest_rules(&rules);
    list_files("dicom-cxr");
    ck_assert_int_eq(g_nfiles, 16);
    for (int i = 0; i < g_nfiles; i++) {
        bool pass = false;
        bool ok = run_file(g_files[i], &rules, &pass);
        ck_assert_msg(pass, "%s: gate rejected a chest radiograph", g_files[i]);
        ck_assert_msg(ok, "%s: did not present", g_files[i]);
    }
    print_outcomes("dicom-cxr", g_nfiles);
    free_files();
}
END_TEST

START_TEST(test_sweep_corpus_no_crash)
{
    if (!cxr_test_have_shared("dicom-corpus", "corpus sweep"))
        return;
    struct cxr_conf_gate rules;
    chest_rules(&rules);
    /* looser than the product: CR/DX/OT, any size, For Processing analysed;
     * the verdict is only tallied, every loaded file is presented anyway */
    rules.modalities.count = 3;
    strcpy(rules.modalities.items[2], "OT");
    rules.for_processing = CXR_CONF_FOR_PROCESSING_ANALYSE;
    rules.min_rows = rules.min_cols = 1;
    rules.max_rows = rules.max_cols = 65535;
    list_files("dicom-corpus");
    ck_assert_int_ge(g_nfiles, 400);
    int presented = 0;
    for (int i = 0; i < g_nfiles; i++) {
        bool pass = false;
        presented += run_file(g_files[i], &rules, &pass);
    }
    print_outcomes("dicom-corpus", g_nfiles);
    /* MANIFEST.tsv: 268 files decode with pydicom/GDCM; many of those are
     * multi-frame, 32-bit or 1-bit, which we refuse by design */
    ck_assert_int_ge(presented, 200);
    free_files();
}
END_TEST

static Suite *sweep_suite(void)
{
    Suite *s = suite_create("dicom_sweep");
    TCase *tc = tcase_create("sweep");
    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, test_sweep_chest_set_all_present);
    tcase_add_test(tc, test_sweep_corpus_no_crash);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    cxr_dicom_global_init();
    return cxr_test_run(sweep_suite());
}
