/* plugin_settings.h — what the plugin reads from Orthanc's JSON
 * configuration (only the path of the XML configuration and a few facts of
 * Orthanc's own), the forward targets of the XML configuration, and the
 * names of the study metadata the plugin writes. No Orthanc SDK here: these
 * functions take the JSON text, so unit tests run without Orthanc. */
#ifndef CXR_PLUGIN_SETTINGS_H
#define CXR_PLUGIN_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/status.h"

#define PLUGIN_PATHLEN     4096
#define PLUGIN_ERRLEN      1024
#define PLUGIN_MAX_TARGETS 16

/* The study metadata the plugin writes (user metadata: Orthanc must declare
 * each name with an index >= 1024 in its "UserMetadata"). */
enum plugin_metadata {
    PLUGIN_MD_PRIORITY = 0, /* "URGENT" (the configured level name) */
    PLUGIN_MD_LEVEL,        /* "3": URGENT, 2 PRIORITY, 1 ROUTINE, 0 NOT_ANALYSED */
    PLUGIN_MD_SCORE,        /* highest probability, "0.973120" ("" none analysed) */
    PLUGIN_MD_MODEL,        /* "name version sha256" */
    PLUGIN_MD_SCORED_AT,    /* ISO 8601 UTC time of the scoring */
    PLUGIN_MD_SR,           /* SOP Instance UID of the study's latest SR */
    PLUGIN_MD_COUNT
};
extern const char *const plugin_metadata_names[PLUGIN_MD_COUNT];

struct plugin_orthanc_settings {
    bool configured;                  /* a "CxrTriage" object with "ConfigFile" */
    char config_file[PLUGIN_PATHLEN]; /* CxrTriage.ConfigFile */
    bool required;                    /* CxrTriage.Required (a broken config is fatal) */
    int32_t stable_age_s;             /* StableAge (Orthanc's default 60) */
    char index_dir[PLUGIN_PATHLEN]; /* IndexDirectory, else StorageDirectory, else "OrthancStorage"
                                     */
    bool metadata_declared;         /* every name of plugin_metadata_names in UserMetadata */
    char metadata_missing[512];     /* the names that are not ("" all are) */
};

/* Reads Orthanc's configuration (the JSON text OrthancPluginGetConfiguration
 * gives). CXR_ERR_CONF_PARSE when the text is not JSON or CxrTriage has the
 * wrong shape (err says which key). */
enum cxr_status plugin_settings_from_json(const char *json, struct plugin_orthanc_settings *s,
                                          char *err);

/* A forward destination. */
enum plugin_target_kind { PLUGIN_TARGET_MODALITY = 0, PLUGIN_TARGET_PEER = 1 };
struct plugin_target {
    enum plugin_target_kind kind;
    char name[128];
    char text[160]; /* "modality:NAME" as configured */
};

/* Parses "modality:NAME peer:NAME ..." (plugin/forward-sr, forward-study);
 * a bare NAME is a modality. CXR_ERR_CONF_VALUE for an unknown prefix, an
 * empty or too long name, or more than `max` targets. */
enum cxr_status plugin_targets_parse(const char *text, struct plugin_target *out, size_t max,
                                     size_t *n, char *err);

/* The Orthanc label for a level name: "cxr-" + lower case, characters other
 * than letters, digits, '-' and '_' replaced by '_' ("URGENT" → "cxr-urgent"). */
void plugin_label_for(const char *level_name, char *out, size_t len);

#endif
