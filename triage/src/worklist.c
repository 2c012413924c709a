/* worklist.c — ordering and JSON of the reading worklist (see cxr/worklist.h). */
#include "cxr/worklist.h"

#include "cxr/log.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/triage.h"

void cxr_triage_worklist_options_init(struct cxr_triage_worklist_options *o, int64_t now_ms)
{
    memset(o, 0, sizeof *o);
    o->now_ms = now_ms;
    o->window_hours = 24;
    o->limit = 1000;
    snprintf(o->priority_names[CXR_TRIAGE_PRIORITY_NOT_ANALYSED], 32, "NOT_ANALYSED");
    snprintf(o->priority_names[CXR_TRIAGE_PRIORITY_ROUTINE], 32, "ROUTINE");
    snprintf(o->priority_names[CXR_TRIAGE_PRIORITY_PRIORITY], 32, "PRIORITY");
    snprintf(o->priority_names[CXR_TRIAGE_PRIORITY_URGENT], 32, "URGENT");
}

static const char *level_name(const struct cxr_triage_worklist_options *o, int32_t p)
{
    if (p < 0 || p > 3)
        p = 0;
    return o->priority_names[p];
}

/* Most severe first; within one priority, a study with a warning (e.g. a
 * patient outside the model's intended population, analysed under
 * gate/age-policy warn) after every study without one: its score is less
 * trustworthy and must not push validated results down. Then the highest
 * score, then the longest waiting. */
static int cmp_entry(const void *pa, const void *pb)
{
    const struct cxr_triage_worklist_entry *a = pa, *b = pb;
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    bool wa = a->study->warning[0] != '\0', wb = b->study->warning[0] != '\0';
    if (wa != wb)
        return wa ? 1 : -1;
    double sa = isnan(a->study->score) ? -1.0 : a->study->score;
    double sb = isnan(b->study->score) ? -1.0 : b->study->score;
    if (sa != sb)
        return sa > sb ? -1 : 1;
    if (a->study->first_received_ms != b->study->first_received_ms)
        return a->study->first_received_ms < b->study->first_received_ms ? -1 : 1;
    return strcmp(a->study->study_instance_uid, b->study->study_instance_uid);
}

void cxr_triage_worklist_order(const struct cxr_triage_study_row *rows, size_t n,
                               const struct cxr_triage_worklist_options *o,
                               struct cxr_triage_worklist_entry *entries)
{
    int64_t max_wait_ms = (int64_t)o->max_wait_minutes * 60000;
    for (size_t i = 0; i < n; i++) {
        struct cxr_triage_worklist_entry *e = &entries[i];
        e->study = &rows[i];
        e->waiting_ms = o->now_ms - rows[i].first_received_ms;
        if (e->waiting_ms < 0)
            e->waiting_ms = 0;
        e->priority = rows[i].priority;
        e->escalated = false;
        if (max_wait_ms > 0 && rows[i].priority == CXR_TRIAGE_PRIORITY_ROUTINE &&
            e->waiting_ms > max_wait_ms) {
            e->priority = CXR_TRIAGE_PRIORITY_PRIORITY;
            e->escalated = true;
        }
    }
    qsort(entries, n, sizeof *entries, cmp_entry);
}

static void add_str(json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, json_object_new_string(v ? v : ""));
}

static void add_score(json_object *o, const char *key, double v)
{
    json_object_object_add(o, key, isfinite(v) ? json_object_new_double(v) : NULL);
}

/* The fields a worklist line and a study page share. */
static json_object *study_object(const struct cxr_triage_study_row *s, int32_t priority,
                                 bool escalated, int64_t waiting_ms,
                                 const struct cxr_triage_worklist_options *o)
{
    json_object *j = json_object_new_object();
    if (!j)
        return NULL;
    add_str(j, "study_instance_uid", s->study_instance_uid);
    add_str(j, "accession_number", s->accession_number);
    if (o->show_patient_id)
        add_str(j, "patient_id", s->patient_id);
    add_str(j, "study_date", s->study_date);
    add_str(j, "priority", level_name(o, priority));
    json_object_object_add(j, "priority_level", json_object_new_int(priority));
    json_object_object_add(j, "escalated", json_object_new_boolean(escalated));
    if (escalated)
        add_str(j, "result_priority", level_name(o, s->priority));
    add_score(j, "score", s->score);
    json_object_object_add(j, "waiting_s", json_object_new_double((double)waiting_ms / 1000.0));
    json_object_object_add(j, "first_received_ms", json_object_new_int64(s->first_received_ms));
    json_object_object_add(j, "last_received_ms", json_object_new_int64(s->last_received_ms));
    json_object_object_add(j, "images_analysed", json_object_new_int(s->analysed));
    json_object_object_add(j, "images_not_analysed", json_object_new_int(s->not_analysed));
    json_object_object_add(j, "images_awaiting_report", json_object_new_int(s->unreported));
    json_object_object_add(j, "sr_count", json_object_new_int(s->sr_count));
    if (s->warning[0])
        add_str(j, "warning", s->warning);
    if (s->reason[0] && s->not_analysed > 0)
        add_str(j, "not_analysed_reason", s->reason);
    /* read: a reader marked it, and no image came after that */
    json_object_object_add(j, "read", json_object_new_boolean(cxr_triage_study_is_read(s)));
    if (s->read_ms > 0)
        json_object_object_add(j, "read_ms", json_object_new_int64(s->read_ms));
    if (s->last_sr_sop_instance_uid[0])
        add_str(j, "last_sr_sop_instance_uid", s->last_sr_sop_instance_uid);
    json_object *d = json_object_new_object();
    json_object_object_add(d, "pending", json_object_new_int(s->deliveries_pending));
    json_object_object_add(d, "delivered", json_object_new_int(s->deliveries_delivered));
    json_object_object_add(d, "dead", json_object_new_int(s->deliveries_dead));
    json_object_object_add(j, "deliveries", d);
    return j;
}

static char *to_string(json_object *root)
{
    const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    char *out = text ? strdup(text) : NULL;
    json_object_put(root);
    return out;
}

char *cxr_triage_worklist_json(const struct cxr_triage_study_row *rows, size_t n,
                               const struct cxr_triage_worklist_options *o)
{
    struct cxr_triage_worklist_entry *e = calloc(n ? n : 1, sizeof *e);
    json_object *root = json_object_new_object();
    json_object *list = json_object_new_array();
    if (!e || !root || !list) {
        free(e);
        json_object_put(root);
        json_object_put(list);
        return NULL;
    }
    cxr_triage_worklist_order(rows, n, o, e);
    size_t limit = o->limit ? o->limit : 1000;
    for (size_t i = 0; i < n && i < limit; i++) {
        json_object *j =
            study_object(e[i].study, e[i].priority, e[i].escalated, e[i].waiting_ms, o);
        if (j)
            json_object_array_add(list, j);
    }
    json_object_object_add(root, "generated_ms", json_object_new_int64(o->now_ms));
    json_object_object_add(root, "count", json_object_new_int((int)json_object_array_length(list)));
    json_object_object_add(root, "studies", list);
    free(e);
    return to_string(root);
}

char *cxr_triage_study_json(const struct cxr_triage_study_row *study,
                            const struct cxr_triage_instance_row *instances, size_t n,
                            const struct cxr_triage_worklist_options *o)
{
    struct cxr_triage_worklist_entry e;
    cxr_triage_worklist_order(study, 1, o, &e);
    json_object *root = study_object(study, e.priority, e.escalated, e.waiting_ms, o);
    if (!root)
        return NULL;
    json_object *list = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        const struct cxr_triage_instance_row *r = &instances[i];
        json_object *j = json_object_new_object();
        add_str(j, "sop_instance_uid", r->sop_instance_uid);
        add_str(j, "series_instance_uid", r->series_instance_uid);
        add_str(j, "sop_class_uid", r->sop_class_uid);
        add_str(j, "state", cxr_triage_instance_state_name(r->state));
        json_object_object_add(j, "received_ms", json_object_new_int64(r->received_ms));
        if (r->state == CXR_TRIAGE_INSTANCE_ANALYSED) {
            add_score(j, "score", r->probability);
            add_str(j, "finding", r->finding_present ? "present" : "absent");
            add_str(j, "priority", level_name(o, r->priority));
        } else if (r->state == CXR_TRIAGE_INSTANCE_NOT_ANALYSED) {
            add_str(j, "priority", level_name(o, CXR_TRIAGE_PRIORITY_NOT_ANALYSED));
            add_str(j, "status", cxr_status_name((enum cxr_status)r->status));
            add_str(j, "reason", r->reason);
        }
        if (r->warning[0])
            add_str(j, "warning", r->warning);
        json_object_object_add(j, "reported", json_object_new_boolean(r->reported));
        json_object_array_add(list, j);
    }
    json_object_object_add(root, "instances", list);
    return to_string(root);
}

const char *cxr_triage_instance_state_name(enum cxr_triage_instance_state st)
{
    switch (st) {
    case CXR_TRIAGE_INSTANCE_RECEIVED: return "received";
    case CXR_TRIAGE_INSTANCE_ANALYSED: return "analysed";
    case CXR_TRIAGE_INSTANCE_NOT_ANALYSED: return "not_analysed";
    }
    return "unknown";
}

const char *cxr_triage_study_phi(const struct cxr_triage_study_row *study, char *buf, size_t len)
{
    if (!cxr_log_phi_allowed() || (!study->patient_id[0] && !study->accession_number[0]))
        snprintf(buf, len, "%s", "");
    else
        snprintf(buf, len, " (patient %s, accession %s)",
                 study->patient_id[0] ? study->patient_id : "-",
                 study->accession_number[0] ? study->accession_number : "-");
    return buf;
}
