/* info_json.c — the header values of an image (struct cxr_dicom_info) as the
 * JSON document both doors' stores keep (see cxr/study.h), and the reader of
 * the struct images that stores of 0.1.0 kept instead.
 */
#include <json-c/json.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/study.h"

enum field_kind { F_TEXT, F_DOUBLE, F_U16, F_I32, F_BOOL };

struct field {
    const char *name;
    enum field_kind kind;
    size_t offset;
    size_t size; /* F_TEXT: the buffer's size */
};

#define TEXT(f)                                                                                 \
    {                                                                                           \
#f, F_TEXT, offsetof(struct cxr_dicom_info, f), sizeof(((struct cxr_dicom_info *)0)->f) \
    }
#define NUM(f, k)                                    \
    {                                                \
#f, k, offsetof(struct cxr_dicom_info, f), 0 \
    }

/* Every field of struct cxr_dicom_info, by name. A field added to the struct
 * is added here; rows written before it read as that field's default. */
static const struct field fields[] = {
    TEXT(sop_class_uid),
    TEXT(sop_instance_uid),
    TEXT(transfer_syntax_uid),
    TEXT(specific_character_set),
    NUM(has_meta_header, F_BOOL),
    TEXT(patient_name),
    TEXT(patient_id),
    TEXT(issuer_of_patient_id),
    TEXT(patient_birth_date),
    TEXT(patient_sex),
    TEXT(patient_age),
    NUM(patient_age_years, F_DOUBLE),
    TEXT(study_instance_uid),
    TEXT(study_date),
    TEXT(study_time),
    TEXT(study_id),
    TEXT(accession_number),
    TEXT(referring_physician_name),
    TEXT(study_description),
    TEXT(institution_name),
    TEXT(series_instance_uid),
    TEXT(modality),
    TEXT(body_part_examined),
    TEXT(view_position),
    TEXT(laterality),
    TEXT(presentation_intent_type),
    TEXT(image_type),
    TEXT(photometric_interpretation),
    TEXT(manufacturer),
    NUM(rows, F_U16),
    NUM(columns, F_U16),
    NUM(bits_allocated, F_U16),
    NUM(bits_stored, F_U16),
    NUM(high_bit, F_U16),
    NUM(samples_per_pixel, F_U16),
    NUM(pixel_representation, F_U16),
    NUM(number_of_frames, F_I32),
    NUM(has_pixel_data, F_BOOL),
};

#define NFIELDS (sizeof fields / sizeof fields[0])

char *cxr_triage_info_to_json(const struct cxr_dicom_info *info)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    const char *base = (const char *)info;
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        const void *p = base + f->offset;
        json_object *v = NULL;
        switch (f->kind) {
        case F_TEXT: {
            const char *t = p;
            v = json_object_new_string_len(t, (int)strnlen(t, f->size));
            break;
        }
        case F_DOUBLE: {
            double d;
            memcpy(&d, p, sizeof d);
            if (!isfinite(d))
                continue; /* absent: NaN on reading */
            v = json_object_new_double(d);
            break;
        }
        case F_U16: {
            uint16_t u;
            memcpy(&u, p, sizeof u);
            v = json_object_new_int(u);
            break;
        }
        case F_I32: {
            int32_t k;
            memcpy(&k, p, sizeof k);
            v = json_object_new_int(k);
            break;
        }
        case F_BOOL: {
            bool b;
            memcpy(&b, p, sizeof b);
            v = json_object_new_boolean(b);
            break;
        }
        }
        if (!v || json_object_object_add(o, f->name, v) != 0) {
            json_object_put(v);
            json_object_put(o);
            return NULL;
        }
    }
    const char *s =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *out = s ? strdup(s) : NULL;
    json_object_put(o);
    return out;
}

bool cxr_triage_info_from_json(const char *text, struct cxr_dicom_info *info)
{
    memset(info, 0, sizeof *info);
    info->patient_age_years = NAN;
    info->number_of_frames = 1;
    json_object *o = text ? json_tokener_parse(text) : NULL;
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return false;
    }
    char *base = (char *)info;
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, f->name, &v) || !v)
            continue;
        void *p = base + f->offset;
        switch (f->kind) {
        case F_TEXT:
            if (json_object_is_type(v, json_type_string))
                snprintf(p, f->size, "%s", json_object_get_string(v));
            break;
        case F_DOUBLE: {
            double d = json_object_get_double(v);
            memcpy(p, &d, sizeof d);
            break;
        }
        case F_U16: {
            int64_t k = json_object_get_int64(v);
            uint16_t u = k < 0 ? 0 : k > UINT16_MAX ? UINT16_MAX : (uint16_t)k;
            memcpy(p, &u, sizeof u);
            break;
        }
        case F_I32: {
            int64_t k = json_object_get_int64(v);
            int32_t s = k < INT32_MIN ? INT32_MIN : k > INT32_MAX ? INT32_MAX : (int32_t)k;
            memcpy(p, &s, sizeof s);
            break;
        }
        case F_BOOL: {
            bool b = json_object_get_boolean(v);
            memcpy(p, &b, sizeof b);
            break;
        }
        }
    }
    json_object_put(o);
    return true;
}

/* ------------------------------------------------------------------ legacy */

/* The memory image of struct cxr_dicom_info as cxr-triage 0.1.0 stored it
 * (node job store schema 1-2, plugin queue schema 1; x86-64, gcc). Frozen:
 * never change it, whatever becomes of struct cxr_dicom_info. */
struct info_v0_1_0 {
    char sop_class_uid[65];
    char sop_instance_uid[65];
    char transfer_syntax_uid[65];
    char specific_character_set[80];
    bool has_meta_header;
    char patient_name[324];
    char patient_id[68];
    char issuer_of_patient_id[68];
    char patient_birth_date[12];
    char patient_sex[20];
    char patient_age[8];
    double patient_age_years;
    char study_instance_uid[65];
    char study_date[12];
    char study_time[20];
    char study_id[20];
    char accession_number[20];
    char referring_physician_name[324];
    char study_description[68];
    char institution_name[68];
    char series_instance_uid[65];
    char modality[20];
    char body_part_examined[20];
    char view_position[20];
    char laterality[4];
    char presentation_intent_type[20];
    char image_type[68];
    char photometric_interpretation[20];
    char manufacturer[68];
    uint16_t rows, columns;
    uint16_t bits_allocated, bits_stored, high_bit;
    uint16_t samples_per_pixel;
    uint16_t pixel_representation;
    int32_t number_of_frames;
    bool has_pixel_data;
};

#define COPY_TEXT(f) snprintf(info->f, sizeof info->f, "%.*s", (int)sizeof old.f, old.f)

bool cxr_triage_info_from_legacy_blob(const void *blob, size_t len, struct cxr_dicom_info *info)
{
    struct info_v0_1_0 old;
    if (!blob || len != sizeof old)
        return false;
    memcpy(&old, blob, sizeof old);
    memset(info, 0, sizeof *info);
    COPY_TEXT(sop_class_uid);
    COPY_TEXT(sop_instance_uid);
    COPY_TEXT(transfer_syntax_uid);
    COPY_TEXT(specific_character_set);
    info->has_meta_header = old.has_meta_header;
    COPY_TEXT(patient_name);
    COPY_TEXT(patient_id);
    COPY_TEXT(issuer_of_patient_id);
    COPY_TEXT(patient_birth_date);
    COPY_TEXT(patient_sex);
    COPY_TEXT(patient_age);
    info->patient_age_years = old.patient_age_years;
    COPY_TEXT(study_instance_uid);
    COPY_TEXT(study_date);
    COPY_TEXT(study_time);
    COPY_TEXT(study_id);
    COPY_TEXT(accession_number);
    COPY_TEXT(referring_physician_name);
    COPY_TEXT(study_description);
    COPY_TEXT(institution_name);
    COPY_TEXT(series_instance_uid);
    COPY_TEXT(modality);
    COPY_TEXT(body_part_examined);
    COPY_TEXT(view_position);
    COPY_TEXT(laterality);
    COPY_TEXT(presentation_intent_type);
    COPY_TEXT(image_type);
    COPY_TEXT(photometric_interpretation);
    COPY_TEXT(manufacturer);
    info->rows = old.rows;
    info->columns = old.columns;
    info->bits_allocated = old.bits_allocated;
    info->bits_stored = old.bits_stored;
    info->high_bit = old.high_bit;
    info->samples_per_pixel = old.samples_per_pixel;
    info->pixel_representation = old.pixel_representation;
    info->number_of_frames = old.number_of_frames;
    info->has_pixel_data = old.has_pixel_data;
    return true;
}
