/* dicom_test_writer.h — builds small DICOM byte streams for the dicom test
 * suites (header-only, test code). Written from PS3.5 §7 and PS3.10 §7
 * directly, without DCMTK, so that the bytes under test do not come from the
 * library under test.
 */
#ifndef CXR_DICOM_TEST_WRITER_H
#define CXR_DICOM_TEST_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tds {
    uint8_t *p;
    size_t n, cap;
    bool implicit; /* Implicit VR Little Endian instead of Explicit */
};

static inline void tds_bytes(struct tds *d, const void *v, size_t n)
{
    if (d->n + n > d->cap) {
        size_t cap = d->cap ? d->cap : 256;
        while (cap < d->n + n)
            cap *= 2;
        uint8_t *q = realloc(d->p, cap);
        if (!q)
            abort(); /* test helper: out of memory is fatal */
        d->p = q;
        d->cap = cap;
    }
    if (n)
        memcpy(d->p + d->n, v, n);
    d->n += n;
}

static inline void tds_u16(struct tds *d, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    tds_bytes(d, b, 2);
}

static inline void tds_u32(struct tds *d, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    tds_bytes(d, b, 4);
}

static inline bool tds_long_vr(const char *vr)
{
    static const char *const k[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ",
                                    "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (memcmp(vr, k[i], 2) == 0)
            return true;
    return false;
}

/* One element; odd values are padded (space for text VRs, NUL otherwise). */
static inline void tds_el(struct tds *d, uint16_t g, uint16_t e, const char *vr, const void *val,
                          uint32_t len)
{
    uint32_t pad = len & 1u;
    tds_u16(d, g);
    tds_u16(d, e);
    if (d->implicit) {
        tds_u32(d, len + pad);
    } else {
        tds_bytes(d, vr, 2);
        if (tds_long_vr(vr)) {
            tds_u16(d, 0);
            tds_u32(d, len + pad);
        } else {
            tds_u16(d, (uint16_t)(len + pad));
        }
    }
    tds_bytes(d, val, len);
    if (pad) {
        bool text = strstr("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UR UT", vr) != NULL;
        uint8_t b = text ? ' ' : 0;
        tds_bytes(d, &b, 1);
    }
}

static inline void tds_str(struct tds *d, uint16_t g, uint16_t e, const char *vr, const char *s)
{
    tds_el(d, g, e, vr, s, (uint32_t)strlen(s));
}

static inline void tds_us(struct tds *d, uint16_t g, uint16_t e, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    tds_el(d, g, e, "US", b, 2);
}

static inline void tds_ss(struct tds *d, uint16_t g, uint16_t e, int16_t v)
{
    uint16_t u = (uint16_t)v;
    uint8_t b[2] = {(uint8_t)u, (uint8_t)(u >> 8)};
    tds_el(d, g, e, "SS", b, 2);
}

/* 16-bit values, little endian, as the given VR (US, SS, OW). */
static inline void tds_u16s(struct tds *d, uint16_t g, uint16_t e, const char *vr,
                            const uint16_t *v, size_t count)
{
    uint8_t *b = malloc(count * 2 + 1);
    if (!b)
        abort();
    for (size_t i = 0; i < count; i++) {
        b[2 * i] = (uint8_t)v[i];
        b[2 * i + 1] = (uint8_t)(v[i] >> 8);
    }
    tds_el(d, g, e, vr, b, (uint32_t)(count * 2));
    free(b);
}

/* Sequences and items of undefined length. */
static inline void tds_seq_begin(struct tds *d, uint16_t g, uint16_t e)
{
    tds_u16(d, g);
    tds_u16(d, e);
    if (!d->implicit) {
        tds_bytes(d, "SQ", 2);
        tds_u16(d, 0);
    }
    tds_u32(d, 0xFFFFFFFFu);
}
static inline void tds_item_begin(struct tds *d)
{
    tds_u16(d, 0xFFFE);
    tds_u16(d, 0xE000);
    tds_u32(d, 0xFFFFFFFFu);
}
static inline void tds_item_end(struct tds *d)
{
    tds_u16(d, 0xFFFE);
    tds_u16(d, 0xE00D);
    tds_u32(d, 0);
}
static inline void tds_seq_end(struct tds *d)
{
    tds_u16(d, 0xFFFE);
    tds_u16(d, 0xE0DD);
    tds_u32(d, 0);
}

/* Encapsulated Pixel Data: empty offset table and one fragment. */
static inline void tds_encapsulated(struct tds *d, const void *frag, uint32_t len)
{
    tds_u16(d, 0x7FE0);
    tds_u16(d, 0x0010);
    tds_bytes(d, "OB", 2);
    tds_u16(d, 0);
    tds_u32(d, 0xFFFFFFFFu);
    tds_u16(d, 0xFFFE);
    tds_u16(d, 0xE000);
    tds_u32(d, 0);
    tds_u16(d, 0xFFFE);
    tds_u16(d, 0xE000);
    tds_u32(d, len + (len & 1u));
    tds_bytes(d, frag, len);
    if (len & 1u) {
        uint8_t z = 0;
        tds_bytes(d, &z, 1);
    }
    tds_seq_end(d);
}

/* A Part 10 file: preamble, "DICM", File Meta Information (Explicit VR LE)
 * naming `ts_uid`, then the dataset bytes. Caller frees. */
static inline uint8_t *tds_part10(const struct tds *ds, const char *sop_class, const char *ts_uid,
                                  size_t *len)
{
    struct tds meta = {0};
    uint8_t version[2] = {0, 1};
    tds_el(&meta, 0x0002, 0x0001, "OB", version, 2);
    tds_str(&meta, 0x0002, 0x0002, "UI", sop_class);
    tds_str(&meta, 0x0002, 0x0003, "UI", "1.2.826.0.1.3680043.10.1234.1");
    tds_str(&meta, 0x0002, 0x0010, "UI", ts_uid);
    tds_str(&meta, 0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.1234.2");
    struct tds out = {0};
    uint8_t pre[128] = {0};
    tds_bytes(&out, pre, sizeof pre);
    tds_bytes(&out, "DICM", 4);
    uint8_t gl[4] = {(uint8_t)meta.n, (uint8_t)(meta.n >> 8), (uint8_t)(meta.n >> 16),
                     (uint8_t)(meta.n >> 24)};
    tds_el(&out, 0x0002, 0x0000, "UL", gl, 4);
    tds_bytes(&out, meta.p, meta.n);
    tds_bytes(&out, ds->p, ds->n);
    free(meta.p);
    *len = out.n;
    return out.p;
}

#endif
