/* check_train_dataset.c — labeled data for training: PNG/JPEG decoding
 * against PIL, the loader on class folders, tar.gz/tar.xz/zip archives and
 * CSV manifests (same samples, same digest), refused archive paths, caps,
 * skipped entries with reasons, patient groups, and DICOM through the
 * inference presentation pipeline. The split and the Kermany names are in
 * check_train_split.c. */
#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/dataset.h"
#include "cxr/dicom.h"
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

/* Writes root/rel, creating the folders on the way. */
static void put_file(const char *root, const char *rel, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    ck_assert_msg(cxr_test_write_file(path, data, len), "cannot write %s", path);
}

/* A w x h grey PNG with a pattern depending on `seed`. */
static void *make_png(int w, int h, int seed, size_t *len)
{
    uint8_t *px = malloc((size_t)w * h);
    for (int i = 0; i < w * h; i++)
        px[i] = (uint8_t)(i * 7 + seed * 31);
    void *png;
    ck_assert_int_eq(cxr_train_image_encode_png(px, w, h, w, &png, len, NULL), CXR_OK);
    free(px);
    return png;
}

static const struct cxr_train_sample *find_sample(const struct cxr_train_dataset *ds,
                                                  const char *name)
{
    for (size_t i = 0; i < ds->count; i++)
        if (strcmp(ds->samples[i].name, name) == 0)
            return &ds->samples[i];
    return NULL;
}

static const struct cxr_train_skip *find_skip(const struct cxr_train_dataset *ds, const char *name)
{
    for (size_t i = 0; i < ds->skipped_count; i++)
        if (strcmp(ds->skipped[i].name, name) == 0)
            return &ds->skipped[i];
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

/* ------------------------------------------------------------------ image codecs */

struct membuf {
    uint8_t *p;
    size_t n, cap;
};

static void membuf_write(png_structp png, png_bytep data, size_t n)
{
    struct membuf *m = png_get_io_ptr(png);
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->p = realloc(m->p, m->cap);
        ck_assert_ptr_nonnull(m->p);
    }
    memcpy(m->p + m->n, data, n);
    m->n += n;
}

static void membuf_flush(png_structp png) { (void)png; }

/* A w x h 8-bit PNG (grey, or RGB with rgb), row by row through libpng, so
 * that a huge image of zeros (pixel(x, y, c) NULL) never exists in memory.
 * Adam7-interlaced when interlace. Caller frees. */
static void *write_png(uint32_t w, uint32_t h, bool rgb, bool interlace,
                       uint8_t (*pixel)(uint32_t x, uint32_t y, int c), size_t *len)
{
    struct membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    ck_assert(png && info);
    ck_assert_int_eq(setjmp(png_jmpbuf(png)), 0);
    png_set_write_fn(png, &m, membuf_write, membuf_flush);
    png_set_IHDR(png, info, w, h, 8, rgb ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    int ch = rgb ? 3 : 1;
    uint8_t *row = calloc((size_t)w * ch, 1);
    ck_assert_ptr_nonnull(row);
    int passes = interlace ? png_set_interlace_handling(png) : 1;
    for (int pass = 0; pass < passes; pass++)
        for (uint32_t y = 0; y < h; y++) {
            if (pixel)
                for (uint32_t x = 0; x < w; x++)
                    for (int c = 0; c < ch; c++)
                        row[(size_t)x * ch + c] = pixel(x, y, c);
            png_write_row(png, row);
        }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    *len = m.n;
    return m.p;
}

static uint8_t colourful(uint32_t x, uint32_t y, int c)
{
    return (uint8_t)(x * (7 + c) + y * (3 + 5 * c));
}

/* PNG and JPEG headers declaring more pixels than an image may have are
 * refused before anything is decoded (issue 14, item 3: a 1.6 MB PNG
 * expanded to 1.6 GB); an interlaced colour PNG (decoded whole) and the same
 * image without interlace (decoded row by row) give the same grey. */
START_TEST(image_size_checked_before_decoding)
{
    uint8_t *px = (uint8_t *)1;
    int32_t w, h;
    size_t len;
    char err[CXR_ERRLEN] = "";

    /* 16384 x 4097 zeros: sides within 16384, 2^26 + 16384 pixels */
    void *bomb = write_png(16384, 4097, false, false, NULL, &len);
    ck_assert_uint_lt(len, 1u << 20);
    ck_assert_int_eq(cxr_train_image_decode(bomb, len, &px, &w, &h, err), CXR_ERR_LIMIT);
    ck_assert_ptr_null(px);
    ck_assert_msg(strstr(err, "PNG: 16384x4097") && strstr(err, "decompression bomb"), "%s", err);
    free(bomb);

    /* the grey JPEG fixture with its frame header (SOF0) claiming 16384 x 8192 */
    uint8_t *jpg = slurp(cxr_test_data_path("train/gray.jpg"), &len);
    size_t sof = 2;
    while (sof + 9 < len && !(jpg[sof] == 0xFF && jpg[sof + 1] == 0xC0))
        sof++;
    ck_assert_uint_lt(sof + 9, len);
    jpg[sof + 5] = 0x20, jpg[sof + 6] = 0x00; /* height 8192 */
    jpg[sof + 7] = 0x40, jpg[sof + 8] = 0x00; /* width 16384 */
    px = (uint8_t *)1;
    ck_assert_int_eq(cxr_train_image_decode(jpg, len, &px, &w, &h, err), CXR_ERR_LIMIT);
    ck_assert_ptr_null(px);
    ck_assert_msg(strstr(err, "JPEG: 16384x8192") && strstr(err, "decompression bomb"), "%s", err);
    free(jpg);

    /* interlaced and not: the same grey */
    size_t l1, l2;
    void *plain = write_png(37, 29, true, false, colourful, &l1);
    void *adam7 = write_png(37, 29, true, true, colourful, &l2);
    uint8_t *a, *b;
    ck_assert_int_eq(cxr_train_image_decode(plain, l1, &a, &w, &h, err), CXR_OK);
    ck_assert(w == 37 && h == 29);
    ck_assert_int_eq(cxr_train_image_decode(adam7, l2, &b, &w, &h, err), CXR_OK);
    ck_assert(w == 37 && h == 29);
    ck_assert_int_eq(memcmp(a, b, 37 * 29), 0);
    uint8_t rgb[3] = {colourful(5, 7, 0), colourful(5, 7, 1), colourful(5, 7, 2)};
    ck_assert_int_eq(a[7 * 37 + 5],
                     (rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
    free(a);
    free(b);
    free(plain);
    free(adam7);
}
END_TEST

START_TEST(png_and_jpeg_decode_like_pil)
{
    uint8_t *px;
    int32_t w, h;
    size_t len;
    char err[CXR_ERRLEN];

    /* RGB PNG: luma with PIL's integer weights, from the known channels */
    void *b = slurp(cxr_test_data_path("train/rgb.png"), &len);
    ck_assert_int_eq(cxr_train_image_decode(b, len, &px, &w, &h, err), CXR_OK);
    ck_assert(w == 8 && h == 6);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned r = 30u * x, g = 40u * y, bl = 5u * (x + y) + 7;
            unsigned want = (r * 299 + g * 587 + bl * 114 + 500) / 1000;
            ck_assert_msg(abs((int)px[y * w + x] - (int)want) <= 1, "(%d,%d) %d vs %u", x, y,
                          px[y * w + x], want);
        }
    free(px);
    free(b);

    /* 16-bit grey PNG: scaled to 8 bits */
    b = slurp(cxr_test_data_path("train/gray16.png"), &len);
    ck_assert_int_eq(cxr_train_image_decode(b, len, &px, &w, &h, err), CXR_OK);
    ck_assert(w == 5 && h == 4);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double want = (9000.0 * x + 3000.0 * y) / 257.0;
            ck_assert(fabs(px[y * w + x] - want) <= 1.0);
        }
    free(px);
    free(b);

    /* palette PNG: black, red, green, blue → their luma */
    b = slurp(cxr_test_data_path("train/palette.png"), &len);
    ck_assert_int_eq(cxr_train_image_decode(b, len, &px, &w, &h, err), CXR_OK);
    const int idx[8] = {0, 1, 2, 3, 3, 2, 1, 0};
    const int luma[4] = {0, 76, 150, 29}; /* 255*.299, 255*.587, 255*.114 */
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(px[i], luma[idx[i]]);
    free(px);
    free(b);

    /* JPEGs (RGB with equal channels, and grey): identical to PIL's "L" */
    const char *jpgs[2] = {"train/rgb.jpg", "train/gray.jpg"};
    for (int k = 0; k < 2; k++) {
        char ref[256];
        snprintf(ref, sizeof ref, "%s.L", jpgs[k]);
        size_t rlen;
        uint8_t *want = slurp(cxr_test_data_path(ref), &rlen);
        b = slurp(cxr_test_data_path(jpgs[k]), &len);
        ck_assert_int_eq(cxr_train_image_decode(b, len, &px, &w, &h, err), CXR_OK);
        ck_assert(w == 20 && h == 24 && rlen == 480);
        ck_assert_int_eq(memcmp(px, want, rlen), 0);
        free(px);
        free(b);
        free(want);
    }

    /* truncated JPEG and junk: errors, no image */
    b = slurp(cxr_test_data_path("train/truncated.jpg"), &len);
    px = (uint8_t *)1;
    ck_assert_int_eq(cxr_train_image_decode(b, len, &px, &w, &h, err), CXR_ERR_NN_IMAGE);
    ck_assert_ptr_null(px);
    ck_assert_ptr_nonnull(strstr(err, "JPEG"));
    free(b);
    ck_assert_int_eq(cxr_train_image_decode("hello", 5, &px, &w, &h, err), CXR_ERR_NN_IMAGE);
    static const uint8_t bad_png[16] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                        0,    0,   0,   13,  'I',  'H',  'D',  'R'};
    ck_assert_int_eq(cxr_train_image_decode(bad_png, 16, &px, &w, &h, err), CXR_ERR_NN_IMAGE);

    /* encode → decode round trip */
    uint8_t img[7 * 5];
    for (int i = 0; i < 35; i++)
        img[i] = (uint8_t)(i * 13);
    void *png;
    ck_assert_int_eq(cxr_train_image_encode_png(img, 7, 5, 7, &png, &len, err), CXR_OK);
    ck_assert_int_eq(cxr_train_image_decode(png, len, &px, &w, &h, err), CXR_OK);
    ck_assert(w == 7 && h == 5 && memcmp(px, img, 35) == 0);
    free(px);
    free(png);
}
END_TEST

START_TEST(patient_rule_on_file_names)
{
    static const char *const cases[][2] = {
        {"person123_bacteria_456.jpeg", "person123"},
        {"PNEUMONIA/person1946_bacteria_4875.jpeg", "person1946"},
        {"person447_virus_921_1.jpeg", "person447"},
        {"IM-0115-0001.jpeg", "IM-0115"},
        {"IM-0629-0001-0002.jpeg", "IM-0629"},
        {"NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"},
        {"x/NORMAL2-IM-1345-0001-0001.jpeg", "NORMAL2-IM-1345"},
        {"person12.jpeg", ""},
        {"personA_1.jpeg", ""},
        {"IM-12.jpeg", ""},
        {"NORMAL-IM-0001-1.jpeg", ""},
        {"scan_001.png", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        cxr_train_patient_from_filename(cases[i][0], out, sizeof out);
        ck_assert_msg(strcmp(out, cases[i][1]) == 0, "%s → '%s', want '%s'", cases[i][0], out,
                      cases[i][1]);
    }
}
END_TEST

/* ------------------------------------------------------------------ folders and archives */

/* The fixture tree, as (name, bytes) pairs. */
struct entry {
    char name[128];
    void *data;
    size_t len;
};

static int make_tree(struct entry *e)
{
    int n = 0;
    size_t len;
    void *rgbjpg = slurp(cxr_test_data_path("train/rgb.jpg"), &len);
    snprintf(e[n].name, sizeof e[n].name, "NORMAL/IM-0001-0001.jpeg");
    e[n].data = rgbjpg;
    e[n++].len = len;
    snprintf(e[n].name, sizeof e[n].name, "NORMAL/sub/IM-0001-0002.png");
    e[n].data = make_png(30, 20, 1, &e[n].len);
    n++;
    snprintf(e[n].name, sizeof e[n].name, "normal/IM-0002-0001.png"); /* folder case */
    e[n].data = make_png(12, 9, 2, &e[n].len);
    n++;
    snprintf(e[n].name, sizeof e[n].name, "PNEUMONIA/person7_bacteria_1.png");
    e[n].data = make_png(20, 20, 3, &e[n].len);
    n++;
    snprintf(e[n].name, sizeof e[n].name, "PNEUMONIA/person7_virus_2.png");
    e[n].data = make_png(16, 24, 4, &e[n].len);
    n++;
    snprintf(e[n].name, sizeof e[n].name, "PNEUMONIA/person8_bacteria_3.png");
    e[n].data = make_png(600, 500, 5, &e[n].len); /* > 2 x 224: downscaled */
    n++;
    snprintf(e[n].name, sizeof e[n].name, "PNEUMONIA/broken.jpeg");
    e[n].data = slurp(cxr_test_data_path("train/truncated.jpg"), &e[n].len);
    n++;
    snprintf(e[n].name, sizeof e[n].name, "README.txt");
    e[n].data = strdup("not an image, and in no class folder\n");
    e[n].len = strlen(e[n].data);
    n++;
    snprintf(e[n].name, sizeof e[n].name, "NORMAL/.DS_Store");
    e[n].data = strdup("ignored");
    e[n].len = 7;
    n++;
    return n;
}

static void free_tree(struct entry *e, int n)
{
    for (int i = 0; i < n; i++)
        free(e[i].data);
}

/* What every copy of the tree must load as. */
static void check_tree(const struct cxr_train_dataset *ds, struct entry *e)
{
    ck_assert_uint_eq(ds->count, 6);
    ck_assert_int_eq(ds->class_counts[0], 3);
    ck_assert_int_eq(ds->class_counts[1], 3);
    for (size_t i = 1; i < ds->count; i++)
        ck_assert(strcmp(ds->samples[i - 1].name, ds->samples[i].name) < 0);
    const struct cxr_train_sample *s = find_sample(ds, "NORMAL/sub/IM-0001-0002.png");
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->label, 0);
    ck_assert(s->width == 30 && s->height == 20 && s->kind == CXR_TRAIN_IMAGE_PNG);
    ck_assert_str_eq(s->patient, "IM-0001");
    ck_assert_int_eq(s->patient_source, CXR_TRAIN_PATIENT_FILENAME);
    for (int i = 0; i < 30 * 20; i++)
        ck_assert_uint_eq(s->pixels[i], (uint8_t)(i * 7 + 31));
    s = find_sample(ds, "normal/IM-0002-0001.png");
    ck_assert(s && s->label == 0);
    s = find_sample(ds, "NORMAL/IM-0001-0001.jpeg");
    ck_assert(s && s->kind == CXR_TRAIN_IMAGE_JPEG && s->width == 20 && s->height == 24);
    s = find_sample(ds, "PNEUMONIA/person8_bacteria_3.png");
    ck_assert(s && s->source_width == 600 && s->source_height == 500);
    ck_assert(s->width == 448 && s->height == 373); /* 600x500 / (600/448), aspect kept */
    ck_assert_str_eq(s->patient, "person8");
    /* its pixels: the antialiased resize of the source */
    uint8_t *src = malloc(600 * 500), *want = malloc(448 * 373);
    for (int i = 0; i < 600 * 500; i++)
        src[i] = (uint8_t)(i * 7 + 5 * 31);
    ck_assert_int_eq(cxr_nn_resize_u8(src, 600, 500, 600, want, 448, 373, 448), CXR_OK);
    ck_assert_int_eq(memcmp(s->pixels, want, 448 * 373), 0);
    free(src);
    free(want);
    /* content hash of one entry (bytes as written) */
    ck_assert_uint_eq(strlen(ds->samples[0].sha256), 64);

    ck_assert_uint_eq(ds->skipped_count, 2);
    const struct cxr_train_skip *k = find_skip(ds, "PNEUMONIA/broken.jpeg");
    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(k->status, CXR_ERR_NN_IMAGE);
    k = find_skip(ds, "README.txt");
    ck_assert_ptr_nonnull(k);
    ck_assert_ptr_nonnull(strstr(k->reason, "no class folder"));
    ck_assert_ptr_nonnull(strstr(k->reason, "PNEUMONIA"));
    /* patients: IM-0001 (2), IM-0002, person7 (2), person8 → 4 groups */
    ck_assert_uint_eq(ds->patient_groups, 4);
    ck_assert_uint_eq(ds->samples_with_patient, 6);
    ck_assert(strncmp(ds->digest, "sha256:", 7) == 0 && strlen(ds->digest) == 71);
    (void)e;
}

/* Writes the entries into an archive with libarchive. */
static void write_archive(const char *path, struct entry *e, int n, int format, int filter,
                          const char *prefix)
{
    struct archive *a = archive_write_new();
    ck_assert_int_eq(archive_write_set_format(a, format), ARCHIVE_OK);
    if (filter != ARCHIVE_FILTER_NONE)
        ck_assert_int_eq(archive_write_add_filter(a, filter), ARCHIVE_OK);
    ck_assert_int_eq(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (int i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        char *name;
        ck_assert_int_ge(asprintf(&name, "%s%s", prefix, e[i].name), 0);
        archive_entry_set_pathname(ae, name);
        free(name);
        archive_entry_set_size(ae, (la_int64_t)e[i].len);
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, 0644);
        ck_assert_int_eq(archive_write_header(a, ae), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_data(a, e[i].data, e[i].len), (la_ssize_t)e[i].len);
        archive_entry_free(ae);
    }
    ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

START_TEST(folder_and_archives_give_the_same_samples)
{
    struct entry e[16];
    int n = make_tree(e);
    char *dir = cxr_test_tmpdir();
    char root[1024], path[4096];
    snprintf(root, sizeof root, "%s/data", dir);
    mkdir(root, 0755);
    for (int i = 0; i < n; i++)
        put_file(root, e[i].name, e[i].data, e[i].len);

    struct cxr_train_dataset_options o;
    cxr_train_dataset_options_init(&o, &META);
    o.threads = 2;
    struct cxr_train_dataset *ds = load(root, &o);
    ck_assert_str_eq(ds->source_kind, "directory");
    check_tree(ds, e);
    char digest[72];
    snprintf(digest, sizeof digest, "%s", ds->digest);
    cxr_train_dataset_free(ds);

    /* one decoding thread: the same result */
    o.threads = 1;
    ds = load(root, &o);
    check_tree(ds, e);
    ck_assert_str_eq(ds->digest, digest);
    cxr_train_dataset_free(ds);

    struct {
        const char *file;
        int format, filter;
        const char *prefix;
    } kinds[] = {
        {"d.tar.gz", ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, ARCHIVE_FILTER_GZIP, "./"},
        {"d.tar.xz", ARCHIVE_FORMAT_TAR_USTAR, ARCHIVE_FILTER_XZ, ""},
        {"d.tar", ARCHIVE_FORMAT_TAR_GNUTAR, ARCHIVE_FILTER_NONE, ""},
        {"d.zip", ARCHIVE_FORMAT_ZIP, ARCHIVE_FILTER_NONE, ""},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, kinds[k].file);
        write_archive(path, e, n, kinds[k].format, kinds[k].filter, kinds[k].prefix);
        ds = load(path, NULL);
        check_tree(ds, e);
        ck_assert_msg(strcmp(ds->digest, digest) == 0, "%s: digest differs", kinds[k].file);
        cxr_train_dataset_free(ds);
    }

    /* a changed label changes the digest */
    o.threads = 0;
    o.label_map = "";
    snprintf(path, sizeof path, "%s/PNEUMONIA/person7_virus_2.png", root);
    char moved[4096];
    snprintf(moved, sizeof moved, "%s/NORMAL/person7_virus_2.png", root);
    ck_assert_int_eq(rename(path, moved), 0);
    ds = load(root, &o);
    ck_assert_str_ne(ds->digest, digest);
    ck_assert_int_eq(ds->class_counts[0], 4);
    cxr_train_dataset_free(ds);

    free_tree(e, n);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(archive_paths_and_caps)
{
    char *dir = cxr_test_tmpdir();
    char path[4096];
    snprintf(path, sizeof path, "%s/evil.tar", dir);
    size_t len;
    void *png = make_png(10, 10, 9, &len);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    ck_assert_int_eq(archive_write_open_filename(a, path), ARCHIVE_OK);
    const char *names[] = {"/etc/NORMAL/abs.png", "../NORMAL/up.png",    "NORMAL/../../up2.png",
                           "NORMAL/ok.png",       "C:/NORMAL/drive.png", "NORMAL\\..\\..\\win.png",
                           "NORMAL/big.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, names[i]);
        size_t sz = strstr(names[i], "big") ? 5000 : len;
        uint8_t *data = calloc(1, sz);
        memcpy(data, png, len < sz ? len : sz);
        archive_entry_set_size(ae, (la_int64_t)sz);
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, 0644);
        ck_assert_int_eq(archive_write_header(a, ae), ARCHIVE_OK);
        archive_write_data(a, data, sz);
        free(data);
        archive_entry_free(ae);
    }
    struct archive_entry *ae = archive_entry_new(); /* a symbolic link */
    archive_entry_set_pathname(ae, "NORMAL/link.png");
    archive_entry_set_filetype(ae, AE_IFLNK);
    archive_entry_set_symlink(ae, "/etc/passwd");
    archive_entry_set_perm(ae, 0777);
    ck_assert_int_eq(archive_write_header(a, ae), ARCHIVE_OK);
    archive_entry_free(ae);
    archive_write_close(a);
    archive_write_free(a);

    struct cxr_train_dataset_options o;
    cxr_train_dataset_options_init(&o, &META);
    o.max_entry_bytes = 4000;
    struct cxr_train_dataset *ds = load(path, &o);
    ck_assert_uint_eq(ds->count, 1);
    ck_assert_str_eq(ds->samples[0].name, "NORMAL/ok.png");
    ck_assert_uint_eq(ds->skipped_count, 7);
    for (int i = 0; i < 6; i++) {
        if (i == 3)
            continue;
        const struct cxr_train_skip *k = find_skip(ds, names[i]);
        ck_assert_msg(k && strstr(k->reason, "unsafe path"), "%s not refused", names[i]);
    }
    const struct cxr_train_skip *k = find_skip(ds, "NORMAL/big.png");
    ck_assert(k && k->status == CXR_ERR_LIMIT);
    k = find_skip(ds, "NORMAL/link.png");
    ck_assert(k && strstr(k->reason, "not a regular file"));
    cxr_train_dataset_free(ds);

    /* entry count cap: a clear error, nothing returned */
    o.max_entries = 3;
    struct cxr_train_dataset *none = (void *)1;
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_train_dataset_load(path, &o, &none, err), CXR_ERR_LIMIT);
    ck_assert_ptr_null(none);
    ck_assert_ptr_nonnull(strstr(err, "entries"));

    /* not an archive; missing path; a folder with nothing usable */
    snprintf(path, sizeof path, "%s/plain.bin", dir);
    cxr_test_write_file(path, "just some bytes, no archive", 27);
    ck_assert_int_eq(cxr_train_dataset_load(path, &o, &none, err), CXR_ERR_TRIAGE_ARCHIVE);
    snprintf(path, sizeof path, "%s/absent", dir);
    ck_assert_int_eq(cxr_train_dataset_load(path, &o, &none, err), CXR_ERR_NOT_FOUND);
    snprintf(path, sizeof path, "%s/emptyish", dir);
    mkdir(path, 0755);
    put_file(path, "OTHER/x.png", png, len);
    o.max_entries = 0;
    ck_assert_int_eq(cxr_train_dataset_load(path, &o, &none, err), CXR_ERR_TRIAGE_ARCHIVE);
    ck_assert_ptr_nonnull(strstr(err, "no usable"));
    ck_assert_ptr_nonnull(strstr(err, "OTHER/x.png"));
    /* ... unless a label map names the folder */
    o.label_map = "other=PNEUMONIA";
    ds = load(path, &o);
    ck_assert_int_eq(ds->class_counts[1], 1);
    cxr_train_dataset_free(ds);
    o.label_map = "other=CANCER";
    ck_assert_int_eq(cxr_train_dataset_load(path, &o, &none, err), CXR_ERR_INVALID_ARG);

    free(png);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(csv_manifest)
{
    char *dir = cxr_test_tmpdir();
    size_t l1, l2, l3;
    void *a = make_png(10, 8, 1, &l1), *b = make_png(11, 8, 2, &l2), *c = make_png(12, 8, 3, &l3);
    put_file(dir, "img/a.png", a, l1);
    put_file(dir, "img/b, with comma.png", b, l2);
    put_file(dir, "img/c.png", c, l3);
    const char *csv = "\xEF\xBB\xBF"
                      "path,label,patient_id\r\n"
                      "img/a.png,NORMAL,P1\r\n"
                      "\"img/b, with comma.png\",1,\"P 2\"\r\n"
                      "\n"
                      "  img/c.png , healthy \r\n"
                      "img/missing.png,PNEUMONIA,P3\r\n"
                      "img/a.png,CANCER,P1\r\n"
                      "onlyonefield\r\n";
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.csv", dir);
    ck_assert(cxr_test_write_file(path, csv, strlen(csv)));
    struct cxr_train_dataset_options o;
    cxr_train_dataset_options_init(&o, &META);
    o.label_map = "healthy=NORMAL;sick=PNEUMONIA";
    struct cxr_train_dataset *ds = load(path, &o);
    ck_assert_str_eq(ds->source_kind, "manifest");
    ck_assert_uint_eq(ds->count, 3);
    const struct cxr_train_sample *s = find_sample(ds, "img/a.png");
    ck_assert(s && s->label == 0 && strcmp(s->patient, "P1") == 0 &&
              s->patient_source == CXR_TRAIN_PATIENT_MANIFEST);
    s = find_sample(ds, "img/b, with comma.png");
    ck_assert(s && s->label == 1 && strcmp(s->patient, "P 2") == 0 && s->width == 11);
    s = find_sample(ds, "img/c.png");
    ck_assert(s && s->label == 0 && s->patient[0] == '\0' &&
              s->patient_source == CXR_TRAIN_PATIENT_NONE);
    ck_assert_uint_eq(ds->skipped_count, 3);
    const struct cxr_train_skip *k = find_skip(ds, "img/missing.png");
    ck_assert(k && strstr(k->reason, "line 6") && k->status == CXR_ERR_IO);
    k = find_skip(ds, "img/a.png");
    ck_assert(k && strstr(k->reason, "unknown label 'CANCER'"));
    k = find_skip(ds, "manifest line 8");
    ck_assert(k && strstr(k->reason, "path,label"));
    cxr_train_dataset_free(ds);
    free(a);
    free(b);
    free(c);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* A manifest can name only regular files inside its own folder (issue 14,
 * item 6): an absolute path, "..", and a symbolic link leading out are
 * skipped as refused; a FIFO is skipped as not a regular file instead of
 * being waited on; a text file is "not a PNG, JPEG or DICOM file" without
 * its bytes in the reason. --allow-outside lifts the folder rule only. */
START_TEST(manifest_rows_stay_inside_and_regular)
{
    char *dir = cxr_test_tmpdir();
    size_t len;
    void *png = make_png(10, 8, 1, &len);
    char data[4096], path[4200], outside[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    ck_assert_int_eq(mkdir(data, 0755), 0);
    put_file(data, "ok.png", png, len);
    put_file(dir, "outside.png", png, len);
    snprintf(outside, sizeof outside, "%s/outside.png", dir);
    const char *passwd = "root:x:0:0:root:/root:/bin/bash\nsecret:x:1000:1000::/home/s:/bin/sh\n";
    put_file(data, "notes.txt", passwd, strlen(passwd));
    snprintf(path, sizeof path, "%s/fifo.png", data);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    snprintf(path, sizeof path, "%s/link.png", data);
    ck_assert_int_eq(symlink("../outside.png", path), 0);
    snprintf(path, sizeof path, "%s/inlink.png", data);
    ck_assert_int_eq(symlink("ok.png", path), 0);
    char csv[8800];
    snprintf(csv, sizeof csv,
             "path,label\n"
             "ok.png,NORMAL\n"
             "inlink.png,PNEUMONIA\n"
             "%s,NORMAL\n"
             "/etc/passwd,NORMAL\n"
             "../outside.png,NORMAL\n"
             "sub/../ok.png,NORMAL\n"
             "link.png,NORMAL\n"
             "fifo.png,NORMAL\n"
             "notes.txt,NORMAL\n",
             outside);
    char manifest[4200];
    snprintf(manifest, sizeof manifest, "%s/labels.csv", data);
    ck_assert(cxr_test_write_file(manifest, csv, strlen(csv)));

    struct cxr_train_dataset_options o;
    cxr_train_dataset_options_init(&o, &META);
    struct cxr_train_dataset *ds = load(manifest, &o);
    ck_assert_uint_eq(ds->count, 2);
    ck_assert_ptr_nonnull(find_sample(ds, "ok.png"));
    ck_assert_ptr_nonnull(find_sample(ds, "inlink.png"));
    ck_assert_uint_eq(ds->skipped_count, 7);
    const char *refused[] = {outside, "/etc/passwd", "../outside.png", "sub/../ok.png"};
    for (size_t i = 0; i < 4; i++) {
        const struct cxr_train_skip *k = find_skip(ds, refused[i]);
        ck_assert_msg(k && k->status == CXR_ERR_TRIAGE_ARCHIVE &&
                          strstr(k->reason, "inside the manifest's folder"),
                      "%s: %s", refused[i], k ? k->reason : "not skipped");
    }
    const struct cxr_train_skip *k = find_skip(ds, "link.png");
    ck_assert_msg(k && strstr(k->reason, "symbolic link leads outside"), "%s",
                  k ? k->reason : "link.png not skipped");
    k = find_skip(ds, "fifo.png");
    ck_assert_msg(k && k->status == CXR_ERR_IO && strstr(k->reason, "not a regular file") &&
                      strstr(k->reason, "FIFO"),
                  "%s", k ? k->reason : "fifo.png not skipped");
    k = find_skip(ds, "notes.txt");
    ck_assert_msg(k && strstr(k->reason, "not a PNG, JPEG or DICOM file"), "%s",
                  k ? k->reason : "notes.txt not skipped");
    /* nothing of the file in any reason: not its text, not its bytes as a tag */
    for (size_t i = 0; i < ds->skipped_count; i++) {
        const char *r = ds->skipped[i].reason;
        ck_assert_msg(!strstr(r, "root") && !strstr(r, "secret") && !strstr(r, "6F72") &&
                          !strstr(r, "claims"),
                      "%s: the reason quotes the file: %s", ds->skipped[i].name, r);
    }
    cxr_train_dataset_free(ds);

    /* --allow-outside: the absolute path, ".." and the link are read ("sub"
     * does not exist, so sub/../ok.png cannot be opened); the FIFO and the
     * text file are still skipped */
    o.allow_outside = true;
    ds = load(manifest, &o);
    ck_assert_uint_eq(ds->count, 5);
    ck_assert_ptr_nonnull(find_sample(ds, "../outside.png"));
    ck_assert_ptr_nonnull(find_sample(ds, "link.png"));
    ck_assert_ptr_nonnull(find_skip(ds, "fifo.png"));
    ck_assert_ptr_nonnull(find_skip(ds, "/etc/passwd")); /* not an image */
    cxr_train_dataset_free(ds);
    free(png);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------ DICOM */

START_TEST(dicom_goes_through_the_presentation_pipeline)
{
    /* A 1024x1024 JPEG-baseline CR from tests/data (the dicom module's
     * fixture), else the same kind of file from ../shared. */
    char src[4096];
    snprintf(src, sizeof src, "%s", cxr_test_data_path("siim_cr_chest_jpeg_baseline.dcm"));
    if (access(src, R_OK) != 0) {
        if (!cxr_test_have_shared("dicom-cxr", "DICOM training entries"))
            return;
        snprintf(src, sizeof src,
                 "%s/dicom-cxr/siim-acr-sample/"
                 "1.2.276.0.7230010.3.1.4.8323329.10001.1517875220.930580.dcm",
                 cxr_test_shared_data());
    }
    char *dir = cxr_test_tmpdir();
    size_t len;
    void *a = slurp(src, &len);
    put_file(dir, "PNEUMONIA/siim.dcm", a, len);
    /* the same instance as inference sees it */
    cxr_dicom_global_init();
    struct cxr_dicom_instance *inst;
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_dicom_instance_load_memory(a, len, "siim", &inst, err), CXR_OK);
    char pid[68];
    snprintf(pid, sizeof pid, "%s", cxr_dicom_instance_info(inst)->patient_id);
    struct cxr_dicom_image img;
    ck_assert_int_eq(cxr_dicom_instance_present(inst, &img, err), CXR_OK);
    cxr_dicom_instance_free(inst);
    free(a);
    /* from ../shared when there: an ACR-NEMA file without preamble, and an
     * SR (not an image) */
    bool have_acr = false, have_sr = false;
    snprintf(src, sizeof src, "%s/dicom-cxr/barre-gdcm/CR-MONO1-10-chest", cxr_test_shared_data());
    if ((a = cxr_test_read_file(src, &len))) {
        put_file(dir, "NORMAL/acr-nema", a, len);
        free(a);
        have_acr = true;
    }
    snprintf(src, sizeof src, "%s/dicom-corpus/pydicom/reportsi.dcm", cxr_test_shared_data());
    if ((a = cxr_test_read_file(src, &len))) {
        put_file(dir, "NORMAL/report.dcm", a, len);
        free(a);
        have_sr = true;
    }

    struct cxr_train_dataset *ds = load(dir, NULL);
    const struct cxr_train_sample *s = find_sample(ds, "PNEUMONIA/siim.dcm");
    ck_assert_ptr_nonnull(s);
    ck_assert(s->kind == CXR_TRAIN_IMAGE_DICOM && s->label == 1);
    ck_assert(s->source_width == img.width && s->source_height == img.height);
    ck_assert(s->width <= 448 && s->height <= 448);
    uint8_t *want = malloc((size_t)s->width * s->height);
    ck_assert_int_eq(cxr_nn_resize_u8(img.pixels, img.width, img.height, img.width, want, s->width,
                                      s->height, s->width),
                     CXR_OK);
    ck_assert_int_eq(memcmp(s->pixels, want, (size_t)s->width * s->height), 0);
    free(want);
    cxr_dicom_image_release(&img);
    size_t pl = strlen(pid);
    while (pl && pid[pl - 1] == ' ')
        pid[--pl] = '\0';
    if (pid[0]) {
        ck_assert_str_eq(s->patient, pid);
        ck_assert_int_eq(s->patient_source, CXR_TRAIN_PATIENT_DICOM);
    }
    if (have_acr) {
        s = find_sample(ds, "NORMAL/acr-nema");
        const struct cxr_train_skip *why = find_skip(ds, "NORMAL/acr-nema");
        ck_assert_msg(s != NULL, "ACR-NEMA file without preamble not loaded: %s",
                      why ? why->reason : "?");
        ck_assert(s->kind == CXR_TRAIN_IMAGE_DICOM && s->width == 440 && s->label == 0);
    }
    if (have_sr) {
        const struct cxr_train_skip *k = find_skip(ds, "NORMAL/report.dcm");
        ck_assert_ptr_nonnull(k);
        ck_assert_int_eq(k->status, CXR_ERR_DICOM_GATE);
    }
    cxr_train_dataset_free(ds);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("triage_dataset");
    TCase *t = tcase_create("images");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_add_test(t, png_and_jpeg_decode_like_pil);
    tcase_add_test(t, image_size_checked_before_decoding);
    tcase_add_test(t, patient_rule_on_file_names);
    suite_add_tcase(s, t);
    t = tcase_create("load");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_add_test(t, folder_and_archives_give_the_same_samples);
    tcase_add_test(t, archive_paths_and_caps);
    tcase_add_test(t, csv_manifest);
    tcase_add_test(t, dicom_goes_through_the_presentation_pipeline);
    suite_add_tcase(s, t);
    /* a FIFO that were waited on would hang: a test timeout, not 600 s */
    t = tcase_create("manifest");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, manifest_rows_stay_inside_and_regular);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
