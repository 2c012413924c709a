/* orthanc_deleted.c — the plugin never brings back what was deleted from
 * Orthanc (see orthanc_internal.h and docs/orthanc-plugin.md, "Deletions").
 *
 * Orthanc 1.10.1 writes no deletion into its change log (GET /changes): it
 * reports them only through the change callback, one Deleted call per
 * instance, series, study and patient removed. The callback notes the
 * studies and patients in a ring here (a mutex and a copy: no Orthanc call,
 * no I/O) and wakes the worker, which, between jobs, forgets the rows of
 * every noted study that Orthanc no longer has (for a deleted patient, or a
 * ring that overflowed, every unfinished study is checked).
 *
 * The callback runs on Orthanc's change thread after the deletion, in no set
 * order with the worker's REST calls, so a job does not rely on it: it checks
 * that its study exists after each batch of images and before it writes
 * metadata or posts an SR (orthanc_score.c), and after posting, that the
 * study holds more than the plugin's own SRs. When a deletion raced the post
 * (POST /instances re-created the deleted study and patient around the SR),
 * the SR is deleted again, which takes the re-created study and patient with
 * it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orthanc_internal.h"

#define UNFINISHED_PAGE 64

void plugin_deleted_note(struct plugin *p, OrthancPluginResourceType type, const char *id)
{
    if (!id || !id[0] ||
        (type != OrthancPluginResourceType_Study && type != OrthancPluginResourceType_Patient))
        return;
    pthread_mutex_lock(&p->deleted_lock);
    struct plugin_deleted *d = &p->deleted[p->deleted_seq % PLUGIN_DELETED_RING];
    d->patient = type == OrthancPluginResourceType_Patient;
    snprintf(d->id, sizeof d->id, "%s", id);
    p->deleted_seq++;
    pthread_mutex_unlock(&p->deleted_lock);
}

bool plugin_study_gone(struct plugin *p, const char *id, const char *when)
{
    char uri[96], err[PLUGIN_ERRLEN];
    snprintf(uri, sizeof uri, "/studies/%s", id);
    if (orest_get_json(p, uri, NULL, err) != CXR_ERR_NOT_FOUND)
        return false; /* there, or Orthanc failed: the next step finds out */
    if (when)
        plugin_log(p, PLOG_WARN,
                   "study %s was deleted from Orthanc %s: dropped, nothing of it is posted", id,
                   when);
    else
        plugin_log(p, PLOG_INFO, "study %s was deleted from Orthanc: forgotten", id);
    if (plugin_db_study_forget(p->db, id) != CXR_OK)
        plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
    return true;
}

/* Every unfinished study (waiting, queued, SR pending) that Orthanc no
 * longer has is forgotten. */
static void check_unfinished(struct plugin *p)
{
    char ids[UNFINISHED_PAGE][PLUGIN_ID_LEN], after[PLUGIN_ID_LEN] = "";
    size_t n = 0;
    do {
        if (plugin_db_unfinished_ids(p->db, after, UNFINISHED_PAGE, ids, &n) != CXR_OK) {
            plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
            return;
        }
        for (size_t i = 0; i < n && !atomic_load(&p->stopping); i++)
            plugin_study_gone(p, ids[i], NULL);
        if (n)
            snprintf(after, sizeof after, "%s", ids[n - 1]);
    } while (n == UNFINISHED_PAGE && !atomic_load(&p->stopping));
}

void plugin_deleted_apply(struct plugin *p)
{
    pthread_mutex_lock(&p->deleted_lock);
    uint64_t from = p->deleted_drained, to = p->deleted_seq;
    bool all = to - from > PLUGIN_DELETED_RING;
    if (all)
        from = to - PLUGIN_DELETED_RING;
    size_t n = (size_t)(to - from);
    struct plugin_deleted *copy = n ? malloc(n * sizeof *copy) : NULL;
    if (n && !copy) {
        pthread_mutex_unlock(&p->deleted_lock);
        return; /* tried again at the next wake-up */
    }
    for (size_t i = 0; i < n; i++)
        copy[i] = p->deleted[(from + i) % PLUGIN_DELETED_RING];
    p->deleted_drained = to;
    pthread_mutex_unlock(&p->deleted_lock);
    for (size_t i = 0; i < n && !atomic_load(&p->stopping); i++) {
        if (copy[i].patient) {
            all = true;
            continue;
        }
        struct plugin_study s;
        bool found = false;
        if (plugin_db_study_get(p->db, copy[i].id, false, &s, &found) == CXR_OK && found)
            plugin_study_gone(p, copy[i].id, NULL);
    }
    free(copy);
    if (all)
        check_unfinished(p);
}

bool plugin_sr_undo_if_alone(struct plugin *p, const char *study, const char *sr_id)
{
    char uri[192], err[PLUGIN_ERRLEN];
    json_object *list = NULL;
    snprintf(uri, sizeof uri, "/studies/%s/instances", study);
    enum cxr_status st = orest_get_json(p, uri, &list, err);
    if (st != CXR_OK && st != CXR_ERR_NOT_FOUND) {
        plugin_log(p, PLOG_WARN, "study %s: cannot check it after storing its SR: %s", study, err);
        return false;
    }
    bool alone = true;
    size_t n = st == CXR_OK && json_object_is_type(list, json_type_array)
                   ? json_object_array_length(list)
                   : 0;
    for (size_t i = 0; i < n && alone; i++) {
        json_object *in = json_object_array_get_idx(list, i);
        bool own = false;
        if (!strcmp(ojson_str(in, "ID"), sr_id))
            continue;
        if (plugin_db_study_is_own_sr(
                p->db, study, ojson_str2(in, "MainDicomTags", "SOPInstanceUID"), &own) != CXR_OK)
            own = false; /* unsure: keep the SR */
        alone = own;
    }
    json_object_put(list);
    if (!alone)
        return false;
    /* Nothing of the study but our SRs: the images were deleted while the SR
     * was on its way and the post re-created the study (and its patient). */
    snprintf(uri, sizeof uri, "/instances/%s", sr_id);
    st = orest_delete(p, uri, err);
    if (st != CXR_OK && st != CXR_ERR_NOT_FOUND)
        plugin_log(p, PLOG_ERROR,
                   "study %s was deleted while its SR %s was being stored, and the SR cannot be "
                   "deleted again: %s (delete it by hand: DELETE %s)",
                   study, sr_id, err, uri);
    else
        plugin_log(p, PLOG_WARN,
                   "study %s was deleted from Orthanc while its SR was being stored: the SR %s "
                   "was deleted again, so nothing of the study comes back",
                   study, sr_id);
    if (plugin_db_study_forget(p->db, study) != CXR_OK)
        plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
    return true;
}
