/* plugin_json.c — REST documents of the plugin over the node's worklist code
 * (see plugin_json.h).
 *
 * cxr_triage_worklist_json orders the rows itself; cxr_triage_worklist_order
 * run on the same array gives the same permutation (same input, same
 * comparator, same sort), which maps each printed entry back to its row and
 * so to its Orthanc identifier. */
#include "plugin_json.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static char *finish(json_object *root)
{
    const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE);
    char *out = text ? strdup(text) : NULL;
    json_object_put(root);
    return out;
}

static void add_str(json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, json_object_new_string(v ? v : ""));
}

static json_object *forward_object(const struct plugin_forward *f)
{
    json_object *j = json_object_new_object();
    if (!j)
        return NULL;
    json_object_object_add(j, "id", json_object_new_int64(f->id));
    add_str(j, "study", f->study);
    add_str(j, "kind", f->kind);
    add_str(j, "target", f->target);
    add_str(j, "resource", f->resource);
    add_str(j, "state", plugin_forward_state_name(f->state));
    json_object_object_add(j, "attempts", json_object_new_int(f->attempts));
    json_object_object_add(j, "next_attempt_ms", json_object_new_int64(f->next_attempt_ms));
    json_object_object_add(j, "created_ms", json_object_new_int64(f->created_ms));
    json_object_object_add(j, "updated_ms", json_object_new_int64(f->updated_ms));
    if (f->last_error[0])
        add_str(j, "last_error", f->last_error);
    return j;
}

/* The plugin's fields of a study, added to a worklist or study object. */
static void add_study_fields(json_object *j, const struct plugin_study *s)
{
    add_str(j, "orthanc_id", s->orthanc_id);
    add_str(j, "state", plugin_study_state_name(s->state));
    add_str(j, "model_version", s->model_version);
    json_object_object_add(j, "scored_ms", json_object_new_int64(s->scored_ms));
    json_object_object_add(j, "queued_ms", json_object_new_int64(s->queued_ms));
    json_object_object_add(j, "sr_stored_ms", json_object_new_int64(s->sr_stored_ms));
}

char *plugin_worklist_json(const struct plugin_study *rows, size_t n,
                           const struct cxr_triage_worklist_options *o)
{
    struct cxr_triage_study_row *plain = calloc(n ? n : 1, sizeof *plain);
    struct cxr_triage_worklist_entry *order = calloc(n ? n : 1, sizeof *order);
    char *text = NULL, *out = NULL;
    json_object *root = NULL;
    if (!plain || !order)
        goto done;
    for (size_t i = 0; i < n; i++)
        plain[i] = rows[i].row;
    text = cxr_triage_worklist_json(plain, n, o);
    if (!text)
        goto done;
    cxr_triage_worklist_order(plain, n, o, order);
    root = json_tokener_parse(text);
    json_object *list = NULL;
    if (!root || !json_object_object_get_ex(root, "studies", &list))
        goto done;
    size_t k = json_object_array_length(list);
    for (size_t i = 0; i < k && i < n; i++) {
        json_object *e = json_object_array_get_idx(list, i);
        size_t row = (size_t)(order[i].study - plain);
        if (row < n)
            add_study_fields(e, &rows[row]);
    }
    out = finish(root);
    root = NULL;
done:
    json_object_put(root);
    free(text);
    free(order);
    free(plain);
    return out;
}

char *plugin_study_json(const struct plugin_study *s, const struct plugin_instance *inst, size_t n,
                        const struct plugin_forward *fw, size_t nfw,
                        const struct cxr_triage_worklist_options *o)
{
    struct cxr_triage_instance_row *plain = calloc(n ? n : 1, sizeof *plain);
    if (!plain)
        return NULL;
    for (size_t i = 0; i < n; i++)
        plain[i] = inst[i].row;
    char *text = cxr_triage_study_json(&s->row, plain, n, o);
    free(plain);
    if (!text)
        return NULL;
    json_object *root = json_tokener_parse(text);
    free(text);
    if (!root)
        return NULL;
    add_study_fields(root, s);
    add_str(root, "model_sha256", s->model_sha);
    if (s->sr_orthanc_id[0])
        add_str(root, "sr_orthanc_id", s->sr_orthanc_id);
    if (s->last_error[0])
        add_str(root, "last_error", s->last_error);
    json_object_object_add(root, "attempts", json_object_new_int(s->attempts));
    json_object *list = NULL;
    if (json_object_object_get_ex(root, "instances", &list)) {
        size_t k = json_object_array_length(list);
        for (size_t i = 0; i < k && i < n; i++) {
            json_object *e = json_object_array_get_idx(list, i);
            add_str(e, "orthanc_id", inst[i].orthanc_id);
            if (inst[i].model_sha[0])
                add_str(e, "model_sha256", inst[i].model_sha);
        }
    }
    json_object *fl = json_object_new_array();
    for (size_t i = 0; fl && i < nfw; i++) {
        json_object *f = forward_object(&fw[i]);
        if (f)
            json_object_array_add(fl, f);
    }
    json_object_object_add(root, "forwards", fl);
    return finish(root);
}

char *plugin_forwards_json(const struct plugin_forward *fw, size_t n)
{
    json_object *root = json_object_new_object();
    json_object *list = json_object_new_array();
    if (!root || !list) {
        json_object_put(root);
        json_object_put(list);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *f = forward_object(&fw[i]);
        if (f)
            json_object_array_add(list, f);
    }
    json_object_object_add(root, "count", json_object_new_int((int)n));
    json_object_object_add(root, "forwards", list);
    return finish(root);
}
