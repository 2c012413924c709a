/* check_train_split.c — the patient-grouped, stratified, seeded
 * train/validation split (synthetic groups, pairwise leak check), the leak
 * check between two sets, and the real Kermany file names: class counts,
 * patient groups by the documented rule, a grouped split of a train subset,
 * and the decoded pixels against PIL. */
#include <check.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/dataset.h"
#include "cxr/nn_train.h"
#include "test_util.h"

static struct cxr_nn_model_meta META;

static void setup(void) { cxr_nn_model_meta_defaults(&META, CXR_NN_ARCH_RESNET18); }

static void *slurp(const char *path, size_t *len)
{
    void *p = cxr_test_read_file(path, len);
    ck_assert_msg(p != NULL, "cannot read %s", path);
    return p;
}

static const struct cxr_train_sample *find_sample(const struct cxr_train_dataset *ds,
                                                  const char *name)
{
    for (size_t i = 0; i < ds->count; i++)
        if (strcmp(ds->samples[i].name, name) == 0)
            return &ds->samples[i];
    return NULL;
}

static struct cxr_train_dataset *load(const char *path, const struct cxr_train_dataset_options *o)
{
    struct cxr_train_dataset_options def;
    if (!o) {
        cxr_train_dataset_options_init(&def, &META);
        o = &def;
    }
    struct cxr_train_dataset *ds = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_train_dataset_load(path, o, &ds, err);
    ck_assert_msg(st == CXR_OK, "load %s: %s (%s)", path, err, cxr_status_name(st));
    return ds;
}

/* ------------------------------------------------------------------ split */

/* A hand-made dataset: patients with 1..5 images, one class each (1:3),
 * and some byte-identical images shared across patients. */
static struct cxr_train_dataset *synthetic(size_t *npat_out)
{
    struct cxr_train_dataset *ds = calloc(1, sizeof *ds);
    ds->num_classes = 2;
    ds->samples = calloc(2000, sizeof *ds->samples);
    struct cxr_nn_rng r;
    cxr_nn_rng_seed(&r, 9);
    size_t n = 0, p = 0;
    while (n < 1200) {
        int imgs = 1 + (int)cxr_nn_rng_below(&r, 5);
        int label = cxr_nn_rng_uniform(&r) < 0.75 ? 1 : 0;
        for (int i = 0; i < imgs; i++) {
            struct cxr_train_sample *s = &ds->samples[n];
            if (asprintf(&s->name, "s%05zu", n) < 0 || asprintf(&s->patient, "P%zu", p) < 0)
                ck_abort();
            s->label = label;
            snprintf(s->sha256, sizeof s->sha256, "%064zx", n);
            n++;
        }
        p++;
    }
    /* every 50th sample duplicates the bytes of the sample 7 before it */
    for (size_t i = 50; i < n; i += 50)
        memcpy(ds->samples[i].sha256, ds->samples[i - 7].sha256, 65);
    /* a few samples with no patient */
    for (size_t i = 3; i < n; i += 97) {
        ds->samples[i].patient[0] = '\0';
    }
    ds->count = n;
    *npat_out = p;
    return ds;
}

START_TEST(split_is_grouped_stratified_and_seeded)
{
    size_t npat;
    struct cxr_train_dataset *ds = synthetic(&npat);
    struct cxr_train_split s, s2;
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_train_dataset_split(ds, 0.25, 42, &s, err), CXR_OK);
    ck_assert_uint_eq(s.n_train + s.n_val, ds->count);
    uint8_t *side = calloc(ds->count, 1);
    for (size_t i = 0; i < s.n_train; i++)
        side[s.train[i]] |= 1;
    for (size_t i = 0; i < s.n_val; i++)
        side[s.val[i]] |= 2;
    int64_t tot[2] = {0}, val[2] = {0};
    for (size_t i = 0; i < ds->count; i++) {
        ck_assert(side[i] == 1 || side[i] == 2); /* every sample exactly once */
        tot[ds->samples[i].label]++;
        val[ds->samples[i].label] += side[i] == 2;
    }
    /* no patient and no identical image on both sides (checked pairwise) */
    for (size_t i = 0; i < ds->count; i++)
        for (size_t j = i + 1; j < ds->count; j++) {
            const struct cxr_train_sample *a = &ds->samples[i], *b = &ds->samples[j];
            bool same = (a->patient[0] && strcmp(a->patient, b->patient) == 0) ||
                        strcmp(a->sha256, b->sha256) == 0;
            if (same)
                ck_assert_msg(side[i] == side[j], "%s and %s split apart", a->name, b->name);
        }
    for (int c = 0; c < 2; c++) {
        double ratio = (double)val[c] / (double)tot[c];
        ck_assert_msg(fabs(ratio - 0.25) < 0.02, "class %d: %.3f in validation", c, ratio);
        ck_assert_int_eq(s.val_counts[c], val[c]);
        ck_assert_int_eq(s.train_counts[c], tot[c] - val[c]);
    }
    ck_assert_uint_gt(s.val_groups, 0);

    /* same seed → same split; another seed → another */
    ck_assert_int_eq(cxr_train_dataset_split(ds, 0.25, 42, &s2, err), CXR_OK);
    ck_assert(s2.n_val == s.n_val && memcmp(s2.val, s.val, s.n_val * sizeof *s.val) == 0);
    cxr_train_split_release(&s2);
    ck_assert_int_eq(cxr_train_dataset_split(ds, 0.25, 43, &s2, err), CXR_OK);
    ck_assert(s2.n_val != s.n_val || memcmp(s2.val, s.val, s.n_val * sizeof *s.val) != 0);
    cxr_train_split_release(&s2);

    /* fraction 0: everything trains (explicit validation set) */
    ck_assert_int_eq(cxr_train_dataset_split(ds, 0.0, 1, &s2, err), CXR_OK);
    ck_assert(s2.n_val == 0 && s2.n_train == ds->count);
    cxr_train_split_release(&s2);
    ck_assert_int_eq(cxr_train_dataset_split(ds, 1.0, 1, &s2, err), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_train_dataset_split(ds, -0.1, 1, &s2, err), CXR_ERR_INVALID_ARG);

    /* overlap between two sets: patients and bytes */
    ck_assert_uint_eq(cxr_train_dataset_overlap(ds, ds), ds->count);
    struct cxr_train_dataset other = *ds;
    other.count = 2;
    other.samples = calloc(2, sizeof *other.samples);
    other.samples[0].patient = "P0";
    snprintf(other.samples[0].sha256, 65, "%064x", 0xabcdefu);
    other.samples[1].patient = "nobody";
    snprintf(other.samples[1].sha256, 65, "%064x", 0xabcdefu);
    ck_assert_uint_eq(cxr_train_dataset_overlap(ds, &other), 1);
    free(other.samples);

    cxr_train_split_release(&s);
    free(side);
    cxr_train_dataset_free(ds);
}
END_TEST

/* ------------------------------------------------------------------ Kermany */

/* The documented grouping rule, written again with POSIX regular expressions. */
static void regex_patient(const char *base, char *out, size_t cap)
{
    regex_t re1, re2;
    regcomp(&re1, "^(person[0-9]+)_", REG_EXTENDED | REG_ICASE);
    regcomp(&re2, "^((NORMAL[0-9]+-)?IM-[0-9]+)-", REG_EXTENDED | REG_ICASE);
    regmatch_t m[3];
    out[0] = '\0';
    if (regexec(&re1, base, 3, m, 0) == 0 || regexec(&re2, base, 3, m, 0) == 0)
        snprintf(out, cap, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), base + m[1].rm_so);
    regfree(&re1);
    regfree(&re2);
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(kermany_val_and_train_subset)
{
    if (!cxr_test_have_shared("cxr-kermany", "Kermany data set"))
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/cxr-kermany/val", cxr_test_shared_data());
    struct cxr_train_dataset *ds = load(path, NULL);
    ck_assert_uint_eq(ds->count, 16);
    ck_assert_int_eq(ds->class_counts[0], 8);
    ck_assert_int_eq(ds->class_counts[1], 8);
    ck_assert_uint_eq(ds->skipped_count, 0);
    for (size_t i = 0; i < ds->count; i++) {
        ck_assert(ds->samples[i].width == 224 && ds->samples[i].height == 224);
        ck_assert_int_eq(ds->samples[i].label, strncmp(ds->samples[i].name, "PNEUMONIA/", 10) == 0);
    }
    ck_assert_str_eq(find_sample(ds, "NORMAL/NORMAL2-IM-1427-0001.jpeg")->patient,
                     "NORMAL2-IM-1427");
    /* person1946 has two images: 15 groups */
    ck_assert_uint_eq(ds->patient_groups, 15);

    /* one image against PIL's decode, when Debian's Python is there */
    char *tmp = cxr_test_tmpdir();
    int rc = cxr_test_sh("%s -c \"from PIL import Image; "
                         "open('%s/ref.L','wb').write(Image.open('%s/PNEUMONIA/"
                         "person1946_bacteria_4874.jpeg').convert('L').tobytes())\" 2>/dev/null",
                         cxr_test_python(), tmp, path);
    if (rc == 0) {
        char ref[4096];
        snprintf(ref, sizeof ref, "%s/ref.L", tmp);
        size_t rlen;
        uint8_t *want = slurp(ref, &rlen);
        const struct cxr_train_sample *s =
            find_sample(ds, "PNEUMONIA/person1946_bacteria_4874.jpeg");
        ck_assert(rlen == 224 * 224 && memcmp(s->pixels, want, rlen) == 0);
        free(want);
    } else {
        printf("SKIP PIL comparison: %s lacks PIL\n", cxr_test_python());
    }
    cxr_train_dataset_free(ds);

    /* A subset of train through symbolic links: every 12th file of each class */
    const char *cls[2] = {"NORMAL", "PNEUMONIA"};
    size_t linked[2] = {0, 0};
    char **bases = malloc(1000 * sizeof *bases);
    size_t nb = 0;
    for (int c = 0; c < 2; c++) {
        char d[2048];
        snprintf(d, sizeof d, "%s/%s", tmp, cls[c]);
        mkdir(d, 0755);
        char lst[4096];
        snprintf(lst, sizeof lst, "%s/list.txt", tmp);
        ck_assert_int_eq(cxr_test_sh("ls %s/cxr-kermany/train/%s | sort > %s",
                                     cxr_test_shared_data(), cls[c], lst),
                         0);
        FILE *f = fopen(lst, "r");
        char line[512];
        size_t i = 0;
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            if (i++ % 12)
                continue;
            char from[4096], to[8192];
            snprintf(from, sizeof from, "%s/cxr-kermany/train/%s/%s", cxr_test_shared_data(),
                     cls[c], line);
            snprintf(to, sizeof to, "%s/%s", d, line);
            ck_assert_int_eq(symlink(from, to), 0);
            linked[c]++;
            bases[nb++] = strdup(line);
        }
        fclose(f);
        unlink(lst);
    }
    struct cxr_train_dataset_options o;
    cxr_train_dataset_options_init(&o, &META);
    o.threads = 2;
    ds = load(tmp, &o);
    ck_assert_int_eq(ds->class_counts[0], (int64_t)linked[0]);
    ck_assert_int_eq(ds->class_counts[1], (int64_t)linked[1]);
    ck_assert_uint_eq(ds->samples_with_patient, ds->count);
    /* groups: distinct patients by the regular expressions (duplicates of
     * bytes may merge a few more) */
    char **keys = malloc(nb * sizeof *keys);
    for (size_t i = 0; i < nb; i++) {
        char k[96];
        regex_patient(bases[i], k, sizeof k);
        ck_assert_msg(k[0], "%s has no patient by the documented rule", bases[i]);
        keys[i] = strdup(k);
    }
    qsort(keys, nb, sizeof *keys, cmp_cstr);
    size_t distinct = nb ? 1 : 0;
    for (size_t i = 1; i < nb; i++)
        distinct += strcmp(keys[i - 1], keys[i]) != 0;
    ck_assert_uint_le(ds->patient_groups, distinct);
    ck_assert_uint_ge(ds->patient_groups + ds->duplicate_samples, distinct);
    for (size_t i = 0; i < ds->count; i++) {
        char k[96];
        regex_patient(strrchr(ds->samples[i].name, '/') + 1, k, sizeof k);
        ck_assert_str_eq(ds->samples[i].patient, k);
    }
    struct cxr_train_split s;
    ck_assert_int_eq(cxr_train_dataset_split(ds, 0.25, 7, &s, NULL), CXR_OK);
    uint8_t *side = calloc(ds->count, 1);
    for (size_t i = 0; i < s.n_val; i++)
        side[s.val[i]] = 1;
    for (size_t i = 0; i < ds->count; i++)
        for (size_t j = i + 1; j < ds->count; j++)
            if (strcmp(ds->samples[i].patient, ds->samples[j].patient) == 0)
                ck_assert(side[i] == side[j]);
    for (int c = 0; c < 2; c++)
        ck_assert(fabs((double)s.val_counts[c] / (double)ds->class_counts[c] - 0.25) < 0.05);
    free(side);
    cxr_train_split_release(&s);
    cxr_train_dataset_free(ds);
    for (size_t i = 0; i < nb; i++) {
        free(bases[i]);
        free(keys[i]);
    }
    free(bases);
    free(keys);
    cxr_test_rmtree(tmp);
    free(tmp);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("triage_split");
    TCase *t = tcase_create("split");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_add_test(t, split_is_grouped_stratified_and_seeded);
    suite_add_tcase(s, t);
    t = tcase_create("kermany");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_add_test(t, kermany_val_and_train_subset);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
