/* dataset_internal.h (internal to train) — the loader that the source
 * readers (archive.c: directories, archives, manifests) feed and that
 * dataset.c runs: entries go in by name and bytes, in reading order; worker
 * threads decode them into samples or skips. */
#ifndef CXR_TRAIN_DATASET_INTERNAL_H
#define CXR_TRAIN_DATASET_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/dataset.h"

struct ds_loader;

/* The entry's label from the folders of its path (innermost class folder
 * wins). -1 when none names a class; `why` then gets the reason. */
int32_t ds_label_from_path(const struct ds_loader *L, const char *name, char *why, size_t cap);
/* A label text (class name, alias or index); -1 when unknown. */
int32_t ds_label_from_text(const struct ds_loader *L, const char *text);
/* The class names joined ("NORMAL, PNEUMONIA") for messages. */
const char *ds_class_list(const struct ds_loader *L);

/* Hands one entry to the decoders. `bytes` (malloc'd) passes to the loader
 * in every case; `patient` (may be NULL) is copied. Counts the entry against
 * max_entries: CXR_ERR_LIMIT stops the read. */
enum cxr_status ds_submit(struct ds_loader *L, const char *name, uint8_t *bytes, size_t len,
                          int32_t label, const char *patient);
/* Records an entry that is not used, in reading order (also counted). */
enum cxr_status ds_skip(struct ds_loader *L, const char *name, enum cxr_status st, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
uint64_t ds_max_entry_bytes(const struct ds_loader *L);
/* Whether manifest rows may name files outside the manifest's folder. */
bool ds_allow_outside(const struct ds_loader *L);

/* Source readers (archive.c). Each returns CXR_OK when the source was read
 * to its end (entries may have been skipped), or a failure of the source as
 * a whole with `err` set. */
enum cxr_status ds_read_directory(struct ds_loader *L, const char *root, char *err);
enum cxr_status ds_read_archive(struct ds_loader *L, const char *path, char *kind, size_t kind_cap,
                                char *err);
enum cxr_status ds_read_manifest(struct ds_loader *L, const char *path, char *err);

/* Normalises an archive entry name in place: '\\' → '/', leading "./" and
 * empty or "." components dropped. Returns false for a name that must be
 * refused: absolute ("/x", "C:x"), or with a ".." component. An empty result
 * (the archive's root folder) returns true with name "". */
bool ds_normalize_entry_name(char *name);

/* Split groups (split.c): group_of[i] (may be NULL) receives sample i's
 * group, numbered 0.. in order of each group's first sample; samples that
 * share a known patient or identical bytes are in one group. Returns the
 * group count, or (size_t)-1 when out of memory. */
size_t ds_groups(const struct cxr_train_dataset *ds, size_t *group_of);
/* Fills ds->patient_groups and ds->duplicate_samples. */
enum cxr_status ds_group_stats(struct cxr_train_dataset *ds, char *err);

#endif
