/* plugin_settings.c — Orthanc's JSON configuration, forward targets, metadata
 * names and labels (see plugin_settings.h). */
#include "plugin_settings.h"

#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

const char *const plugin_metadata_names[PLUGIN_MD_COUNT] = {
    "CxrTriagePriority", "CxrTriageLevel",    "CxrTriageScore",
    "CxrTriageModel",    "CxrTriageScoredAt", "CxrTriageSr",
};

static const char *str_of(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

enum cxr_status plugin_settings_from_json(const char *json, struct plugin_orthanc_settings *s,
                                          char *err)
{
    memset(s, 0, sizeof *s);
    s->stable_age_s = 60;
    snprintf(s->index_dir, sizeof s->index_dir, "OrthancStorage");
    enum json_tokener_error jerr = json_tokener_success;
    json_object *root = json_tokener_parse_verbose(json ? json : "", &jerr);
    if (!root || !json_object_is_type(root, json_type_object)) {
        snprintf(err, PLUGIN_ERRLEN, "Orthanc's configuration is not a JSON object (%s)",
                 root ? "wrong type" : json_tokener_error_desc(jerr));
        json_object_put(root);
        return CXR_ERR_CONF_PARSE;
    }
    enum cxr_status st = CXR_OK;
    const char *dir = str_of(root, "IndexDirectory");
    if (!dir)
        dir = str_of(root, "StorageDirectory");
    if (dir && *dir)
        snprintf(s->index_dir, sizeof s->index_dir, "%s", dir);
    json_object *v = NULL;
    if (json_object_object_get_ex(root, "StableAge", &v) && json_object_is_type(v, json_type_int))
        s->stable_age_s = json_object_get_int(v);
    if (s->stable_age_s < 0)
        s->stable_age_s = 0;

    /* UserMetadata: {"CxrTriagePriority": 7701, ...} */
    json_object *um = NULL;
    bool have_um = json_object_object_get_ex(root, "UserMetadata", &um) &&
                   json_object_is_type(um, json_type_object);
    size_t used = 0;
    for (int i = 0; i < PLUGIN_MD_COUNT; i++) {
        json_object *idx = NULL;
        if (have_um && json_object_object_get_ex(um, plugin_metadata_names[i], &idx) &&
            json_object_is_type(idx, json_type_int) && json_object_get_int(idx) >= 1024 &&
            json_object_get_int(idx) <= 65535)
            continue;
        int k = snprintf(s->metadata_missing + used, sizeof s->metadata_missing - used, "%s%s",
                         used ? " " : "", plugin_metadata_names[i]);
        if (k > 0 && (size_t)k < sizeof s->metadata_missing - used)
            used += (size_t)k;
    }
    s->metadata_declared = used == 0;

    json_object *ct = NULL;
    if (!json_object_object_get_ex(root, "CxrTriage", &ct))
        goto out; /* not configured: the plugin loads and says so */
    if (!json_object_is_type(ct, json_type_object)) {
        snprintf(err, PLUGIN_ERRLEN,
                 "Orthanc configuration: \"CxrTriage\" must be an object "
                 "like {\"ConfigFile\": \"/etc/cxr-triage/cxr-triage.xml\"}");
        st = CXR_ERR_CONF_PARSE;
        goto out;
    }
    json_object *req = NULL;
    if (json_object_object_get_ex(ct, "Required", &req)) {
        if (!json_object_is_type(req, json_type_boolean)) {
            snprintf(err, PLUGIN_ERRLEN,
                     "Orthanc configuration: CxrTriage.Required must be true "
                     "or false");
            st = CXR_ERR_CONF_PARSE;
            goto out;
        }
        s->required = json_object_get_boolean(req);
    }
    json_object *cf = NULL;
    if (!json_object_object_get_ex(ct, "ConfigFile", &cf))
        goto out;
    const char *path =
        json_object_is_type(cf, json_type_string) ? json_object_get_string(cf) : NULL;
    if (!path || !*path || strlen(path) >= sizeof s->config_file) {
        snprintf(err, PLUGIN_ERRLEN,
                 "Orthanc configuration: CxrTriage.ConfigFile must be the "
                 "path of the cxr-triage XML configuration");
        st = CXR_ERR_CONF_PARSE;
        goto out;
    }
    snprintf(s->config_file, sizeof s->config_file, "%s", path);
    s->configured = true;
out:
    json_object_put(root);
    return st;
}

enum cxr_status plugin_targets_parse(const char *text, struct plugin_target *out, size_t max,
                                     size_t *n, char *err)
{
    *n = 0;
    const char *p = text ? text : "";
    while (*p) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && !isspace((unsigned char)*e))
            e++;
        size_t len = (size_t)(e - p);
        if (*n == max) {
            snprintf(err, PLUGIN_ERRLEN, "more than %zu forward targets", max);
            return CXR_ERR_CONF_VALUE;
        }
        struct plugin_target *t = &out[*n];
        memset(t, 0, sizeof *t);
        if (len >= sizeof t->text) {
            snprintf(err, PLUGIN_ERRLEN, "forward target '%.40s...' is too long", p);
            return CXR_ERR_CONF_VALUE;
        }
        memcpy(t->text, p, len);
        const char *colon = memchr(p, ':', len);
        const char *name = p;
        t->kind = PLUGIN_TARGET_MODALITY;
        if (colon) {
            size_t pl = (size_t)(colon - p);
            if (pl == 8 && !strncmp(p, "modality", 8)) {
                t->kind = PLUGIN_TARGET_MODALITY;
            } else if (pl == 4 && !strncmp(p, "peer", 4)) {
                t->kind = PLUGIN_TARGET_PEER;
            } else {
                snprintf(err, PLUGIN_ERRLEN,
                         "forward target '%s': write modality:NAME or peer:NAME", t->text);
                return CXR_ERR_CONF_VALUE;
            }
            name = colon + 1;
        }
        size_t nl = (size_t)(e - name);
        if (nl == 0 || nl >= sizeof t->name) {
            snprintf(err, PLUGIN_ERRLEN, "forward target '%s' has no name", t->text);
            return CXR_ERR_CONF_VALUE;
        }
        for (size_t i = 0; i < nl; i++) {
            unsigned char c = (unsigned char)name[i];
            if (!isalnum(c) && c != '-' && c != '_' && c != '.') {
                snprintf(err, PLUGIN_ERRLEN,
                         "forward target '%s': the name may hold letters, digits, '-', '_', '.'",
                         t->text);
                return CXR_ERR_CONF_VALUE;
            }
        }
        memcpy(t->name, name, nl);
        (*n)++;
        p = e;
    }
    return CXR_OK;
}

void plugin_label_for(const char *level_name, char *out, size_t len)
{
    if (len == 0)
        return;
    size_t k = (size_t)snprintf(out, len, "cxr-");
    for (const char *p = level_name ? level_name : ""; *p && k + 1 < len; p++) {
        unsigned char c = (unsigned char)*p;
        out[k++] = isalnum(c) || c == '-' || c == '_' ? (char)tolower(c) : '_';
    }
    out[k < len ? k : len - 1] = '\0';
}
