/* gate.c — decides from header values alone whether an instance is an image
 * this product analyses (a frontal chest radiograph), and says why not in
 * words a radiographer understands. No pixel decoding, no allocation; the
 * image size is checked against the configured limits here, before anything
 * is decoded. The rules, their order and their reasons are listed in
 * docs/conformance-input.md.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cxr/dicom.h"

#define SOP_CR              "1.2.840.10008.5.1.4.1.1.1"
#define SOP_DX_PRESENTATION "1.2.840.10008.5.1.4.1.1.1.1"
#define SOP_DX_PROCESSING   "1.2.840.10008.5.1.4.1.1.1.1.1"
#define SOP_SC              "1.2.840.10008.5.1.4.1.1.7"

/* Storage SOP classes a PACS commonly sends that are not analysed, named for
 * the reason text (PS3.4 B.5). */
static const struct {
    const char *uid, *name;
} k_sop_names[] = {
    {"1.2.840.10008.5.1.4.1.1.1.2", "Digital Mammography X-Ray Image Storage - For Presentation"},
    {"1.2.840.10008.5.1.4.1.1.1.2.1", "Digital Mammography X-Ray Image Storage - For Processing"},
    {"1.2.840.10008.5.1.4.1.1.1.3", "Digital Intra-Oral X-Ray Image Storage - For Presentation"},
    {"1.2.840.10008.5.1.4.1.1.1.3.1", "Digital Intra-Oral X-Ray Image Storage - For Processing"},
    {"1.2.840.10008.5.1.4.1.1.2", "CT Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.3.1", "Ultrasound Multi-frame Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.4", "MR Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7.1", "Multi-frame Single Bit Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7.2", "Multi-frame Grayscale Byte Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7.3", "Multi-frame Grayscale Word Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7.4", "Multi-frame True Color Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.11.1", "Grayscale Softcopy Presentation State Storage"},
    {"1.2.840.10008.5.1.4.1.1.12.1", "X-Ray Angiographic Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.12.2", "X-Ray Radiofluoroscopic Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.13.1.1", "X-Ray 3D Angiographic Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.13.1.3", "Breast Tomosynthesis Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.20", "Nuclear Medicine Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.30", "Parametric Map Storage"},
    {"1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage"},
    {"1.2.840.10008.5.1.4.1.1.77.1.1", "VL Endoscopic Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.77.1.4", "VL Photographic Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.77.1.6", "VL Whole Slide Microscopy Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.88.11", "Basic Text SR Storage"},
    {"1.2.840.10008.5.1.4.1.1.88.22", "Enhanced SR Storage"},
    {"1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR Storage"},
    {"1.2.840.10008.5.1.4.1.1.88.34", "Comprehensive 3D SR Storage"},
    {"1.2.840.10008.5.1.4.1.1.88.59", "Key Object Selection Document Storage"},
    {"1.2.840.10008.5.1.4.1.1.88.65", "Chest CAD SR Storage"},
    {"1.2.840.10008.5.1.4.1.1.88.67", "X-Ray Radiation Dose SR Storage"},
    {"1.2.840.10008.5.1.4.1.1.104.1", "Encapsulated PDF Storage"},
    {"1.2.840.10008.5.1.4.1.1.128", "Positron Emission Tomography Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.481.1", "RT Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.481.2", "RT Dose Storage"},
    {"1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage"},
    {"1.2.840.10008.5.1.4.1.1.481.5", "RT Plan Storage"},
    {"1.2.840.10008.1.3.10", "Media Storage Directory Storage (DICOMDIR)"},
};

/* Storage SOP classes (and families, ending in '.') that hold no image: an
 * SR lists received images, and these are documents, not images. */
static const char *const NON_IMAGE_CLASSES[] = {
    "1.2.840.10008.5.1.4.1.1.88.",  /* structured reports, key object selection */
    "1.2.840.10008.5.1.4.1.1.11.",  /* presentation states */
    "1.2.840.10008.5.1.4.1.1.104.", /* encapsulated PDF, CDA, STL, OBJ, MTL */
    "1.2.840.10008.5.1.4.1.1.9.",   /* waveforms */
    "1.2.840.10008.5.1.4.1.1.66",   /* raw data, registrations, fiducials, segmentation */
    "1.2.840.10008.5.1.4.1.1.67",   /* real world value mapping */
    "1.2.840.10008.5.1.4.1.1.68.",  /* surfaces */
    "1.2.840.10008.5.1.4.1.1.90.",  /* content assessment */
    "1.2.840.10008.5.1.4.1.1.200.", /* protocols */
    "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.4", "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.481.6", "1.2.840.10008.5.1.4.1.1.481.7",
    "1.2.840.10008.5.1.4.1.1.481.8", "1.2.840.10008.5.1.4.1.1.481.9", /* RT, not RT Image */
    "1.2.840.10008.5.1.4.34.", /* RT plans (second generation) */
    "1.2.840.10008.5.1.4.38.", /* hanging protocols */
    "1.2.840.10008.5.1.4.39.", /* colour palettes */
    "1.2.840.10008.5.1.4.43.", /* generic implant templates */
    "1.2.840.10008.5.1.4.44.", /* implant assembly templates */
    "1.2.840.10008.5.1.4.45.", /* implant template groups */
    "1.2.840.10008.1.3.10",    /* DICOMDIR */
};

bool cxr_dicom_sop_class_is_image(const char *sop_class_uid)
{
    if (!sop_class_uid || !sop_class_uid[0])
        return false;
    for (size_t i = 0; i < sizeof NON_IMAGE_CLASSES / sizeof NON_IMAGE_CLASSES[0]; i++) {
        const char *p = NON_IMAGE_CLASSES[i];
        size_t k = strlen(p);
        if (p[k - 1] == '.' ? strncmp(sop_class_uid, p, k) == 0
                            : strncmp(sop_class_uid, p, k) == 0 &&
                                  (sop_class_uid[k] == '\0' || sop_class_uid[k] == '.'))
            return false;
    }
    return true;
}

static void set_text(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool in_list(const struct cxr_conf_list *list, const char *value);
static bool same_token(const char *a, const char *b);

bool cxr_dicom_gate_concerns(const struct cxr_dicom_info *info, const struct cxr_conf_gate *rules)
{
    if (!info || !rules || !cxr_dicom_sop_class_is_image(info->sop_class_uid))
        return false;
    const char *m = info->modality;
    if (!m[0] || in_list(&rules->modalities, m))
        return true;
    return rules->allow_secondary_capture &&
           (same_token(m, "CR") || same_token(m, "DX") || same_token(m, "OT"));
}

static void set_text(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

/* Appends "; text" (or text when empty) to a warning buffer. */
static void add_warning(struct cxr_dicom_gate_result *res, const char *text)
{
    size_t k = strlen(res->warning);
    if (k > 0 && k + 2 < sizeof res->warning) {
        memcpy(res->warning + k, "; ", 3);
        k += 2;
    }
    if (k + 1 < sizeof res->warning)
        snprintf(res->warning + k, sizeof res->warning - k, "%s", text);
}

/* Case-insensitive comparison of a header value with one list token. */
static bool same_token(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (toupper((unsigned char)*a) != toupper((unsigned char)*b))
            return false;
    return *a == '\0' && *b == '\0';
}

static bool in_list(const struct cxr_conf_list *list, const char *value)
{
    for (uint32_t i = 0; i < list->count && i < CXR_CONF_MAX_LIST; i++)
        if (same_token(list->items[i], value))
            return true;
    return false;
}

/* "CR DX" from a list, for reasons. */
static void list_text(const struct cxr_conf_list *list, char *out, size_t size)
{
    size_t k = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < list->count && i < CXR_CONF_MAX_LIST && k + 1 < size; i++) {
        int n = snprintf(out + k, size - k, "%s%s", i ? " " : "", list->items[i]);
        if (n < 0)
            break;
        k += (size_t)n < size - k ? (size_t)n : size - k - 1;
    }
    if (!out[0])
        snprintf(out, size, "none");
}

static const char *sop_name(const char *uid)
{
    for (size_t i = 0; i < sizeof k_sop_names / sizeof k_sop_names[0]; i++)
        if (strcmp(k_sop_names[i].uid, uid) == 0)
            return k_sop_names[i].name;
    return NULL;
}

static bool is_lateral(const char *view)
{
    static const char *const k_lateral[] = {"LL",  "RL",  "LATERAL", "LAT",
                                            "LLD", "RLD", "LLO",     "RLO"};
    for (size_t i = 0; i < sizeof k_lateral / sizeof k_lateral[0]; i++)
        if (same_token(view, k_lateral[i]))
            return true;
    return false;
}

static bool is_colour(const char *pi)
{
    return strcmp(pi, "RGB") == 0 || strncmp(pi, "YBR_", 4) == 0;
}

/* Sets a rejection; returns so callers can `return reject(...)`. */
static void reject(struct cxr_dicom_gate_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reject(struct cxr_dicom_gate_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
    res->pass = false;
}

void cxr_dicom_gate(const struct cxr_dicom_info *info, const struct cxr_conf_gate *rules,
                    double age_min_years, double age_max_years, struct cxr_dicom_gate_result *res)
{
    char allowed[CXR_CONF_MAX_LIST * 66];
    if (!res)
        return;
    memset(res, 0, sizeof *res);
    if (!info || !rules) {
        reject(res, "internal error: no header values or no gate rules");
        return;
    }

    /* 1. SOP class: an image class we analyse */
    const char *sop = info->sop_class_uid;
    bool sc = false;
    if (!sop[0]) {
        reject(res, "no SOP Class UID: not an image object");
        return;
    } else if (strcmp(sop, SOP_CR) == 0 || strcmp(sop, SOP_DX_PRESENTATION) == 0) {
        /* analysed */
    } else if (strcmp(sop, SOP_DX_PROCESSING) == 0) {
        /* handled with the Presentation Intent below */
    } else if (strcmp(sop, SOP_SC) == 0) {
        if (!rules->allow_secondary_capture) {
            reject(res, "Secondary Capture image (a converted or scanned picture): not admitted "
                        "by the configuration (gate/allow-secondary-capture)");
            return;
        }
        sc = true;
    } else {
        const char *name = sop_name(sop);
        if (name)
            reject(res, "%s is not a chest radiograph", name);
        else
            reject(res, "SOP class %s is not a chest radiograph (CR or DX image)", sop);
        return;
    }

    /* 2. For Processing: raw detector data (PS3.3 C.8.11.1.1.1) */
    if (strcmp(sop, SOP_DX_PROCESSING) == 0 ||
        same_token(info->presentation_intent_type, "FOR PROCESSING")) {
        if (rules->for_processing == CXR_CONF_FOR_PROCESSING_REJECT) {
            reject(res, "For Processing image (raw detector data, not what a radiologist sees)");
            return;
        }
        add_warning(res, "For Processing image (raw detector data) analysed as configured; the "
                         "result may be unreliable");
    }

    /* 3. Modality */
    if (sc) {
        if (!same_token(info->modality, "CR") && !same_token(info->modality, "DX") &&
            !same_token(info->modality, "OT")) {
            reject(res, "Secondary Capture with modality %s is not a radiograph",
                   info->modality[0] ? info->modality : "(none)");
            return;
        }
    } else if (!info->modality[0]) {
        reject(res, "no Modality");
        return;
    } else if (!in_list(&rules->modalities, info->modality)) {
        list_text(&rules->modalities, allowed, sizeof allowed);
        reject(res, "modality %s is not admitted (allowed: %s)", info->modality, allowed);
        return;
    }

    /* 4. Pixel data and frames */
    if (!info->has_pixel_data) {
        reject(res, "no pixel data");
        return;
    }
    if (info->number_of_frames > 1) {
        reject(res, "multi-frame image (%d frames): a radiograph has one",
               (int)info->number_of_frames);
        return;
    }

    /* 5. Photometric interpretation: grey; colour only for Secondary Capture */
    const char *pi = info->photometric_interpretation;
    if (strcmp(pi, "MONOCHROME1") == 0 || strcmp(pi, "MONOCHROME2") == 0) {
        if (info->samples_per_pixel > 1) {
            reject(res, "%s with %u samples per pixel is inconsistent", pi,
                   (unsigned)info->samples_per_pixel);
            return;
        }
    } else if (sc && is_colour(pi) && info->samples_per_pixel == 3) {
        add_warning(res, "colour Secondary Capture converted to grey (luma)");
    } else if (!pi[0]) {
        reject(res, "no PhotometricInterpretation");
        return;
    } else {
        reject(res, "%s image: a radiograph is greyscale (PhotometricInterpretation %s)",
               strcmp(pi, "PALETTE COLOR") == 0 ? "palette colour" : "colour", pi);
        return;
    }

    /* 6. Size, before anything is allocated */
    if (info->rows == 0 || info->columns == 0) {
        reject(res, "image size missing (Rows %u, Columns %u)", (unsigned)info->rows,
               (unsigned)info->columns);
        return;
    }
    if (info->rows < rules->min_rows || info->columns < rules->min_cols) {
        reject(res, "image too small (%ux%u; at least %dx%d)", (unsigned)info->columns,
               (unsigned)info->rows, (int)rules->min_cols, (int)rules->min_rows);
        return;
    }
    if (info->rows > rules->max_rows || info->columns > rules->max_cols) {
        reject(res, "image too large (%ux%u; at most %dx%d)", (unsigned)info->columns,
               (unsigned)info->rows, (int)rules->max_cols, (int)rules->max_rows);
        return;
    }

    /* 7. Bits */
    if (info->bits_allocated != 8 && info->bits_allocated != 16) {
        reject(res, "BitsAllocated %u not supported (8 or 16)", (unsigned)info->bits_allocated);
        return;
    }
    if (info->bits_stored < 1 || info->bits_stored > 16 ||
        info->bits_stored > info->bits_allocated || info->high_bit >= info->bits_allocated) {
        reject(res, "inconsistent bit depth (BitsStored %u, HighBit %u, BitsAllocated %u)",
               (unsigned)info->bits_stored, (unsigned)info->high_bit,
               (unsigned)info->bits_allocated);
        return;
    }

    /* 8. Body part */
    if (!info->body_part_examined[0]) {
        if (!rules->allow_missing_body_part) {
            reject(res, "body part not stated (BodyPartExamined absent)");
            return;
        }
    } else if (!in_list(&rules->body_parts, info->body_part_examined)) {
        list_text(&rules->body_parts, allowed, sizeof allowed);
        reject(res, "body part %s is not a chest (allowed: %s)", info->body_part_examined, allowed);
        return;
    }

    /* 9. View position */
    if (!info->view_position[0]) {
        if (!rules->allow_missing_view_position) {
            reject(res, "view position not stated (ViewPosition absent)");
            return;
        }
    } else if (!in_list(&rules->view_positions, info->view_position)) {
        if (is_lateral(info->view_position)) {
            reject(res, "lateral view (ViewPosition %s)", info->view_position);
        } else {
            list_text(&rules->view_positions, allowed, sizeof allowed);
            reject(res, "view position %s is not admitted (allowed: %s)", info->view_position,
                   allowed);
        }
        return;
    }

    /* 10. Age against the model's intended population (when it states one).
     * An unknown age is outside what was validated, the same as a wrong one. */
    double age = info->patient_age_years;
    bool stated = !isnan(age_min_years) || !isnan(age_max_years);
    if (rules->age_policy != CXR_CONF_AGE_IGNORE && stated) {
        char text[200], range[64];
        if (!isnan(age_min_years) && !isnan(age_max_years))
            set_text(range, sizeof range, "aged %g to %g years", age_min_years, age_max_years);
        else if (!isnan(age_min_years))
            set_text(range, sizeof range, "aged %g years or more", age_min_years);
        else
            set_text(range, sizeof range, "aged up to %g years", age_max_years);
        text[0] = '\0';
        if (isnan(age))
            set_text(text, sizeof text,
                     "patient age unknown (no Patient's Age or Birth Date): the model is meant for "
                     "patients %s (gate/age-policy)",
                     range);
        else if (!isnan(age_min_years) && age < age_min_years)
            set_text(text, sizeof text,
                     "patient age %.1f years is below the intended minimum of %g years: the model "
                     "is meant for patients %s (gate/age-policy)",
                     age, age_min_years, range);
        else if (!isnan(age_max_years) && age > age_max_years)
            set_text(text, sizeof text,
                     "patient age %.1f years is above the intended maximum of %g years: the model "
                     "is meant for patients %s (gate/age-policy)",
                     age, age_max_years, range);
        if (text[0]) {
            if (rules->age_policy == CXR_CONF_AGE_REJECT) {
                reject(res, "%s", text);
                return;
            }
            add_warning(res, text);
        }
    }
    res->pass = true;
}
