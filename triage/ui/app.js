// The reading worklist page, served by the node (/ui/) and by the Orthanc
// plugin (/cxr-triage/ui/): reads ../worklist and ../status (relative, so the
// page also works behind a reverse proxy) and redraws the table every
// REFRESH_MS. Values are written with textContent only. The Orthanc Explorer
// link appears for studies the plugin knows (orthanc_id).
'use strict';
(function () {
  const REFRESH_MS = 10000;
  const rows = document.getElementById('rows');
  const statusBox = document.getElementById('status');
  const showRead = document.getElementById('showread');
  const nread = document.getElementById('nread');
  let last = null;
  document.getElementById('every').textContent = String(REFRESH_MS / 1000);

  function waiting(s) {
    if (s < 60) return Math.round(s) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function studyDate(d) {
    return d && d.length === 8 ? d.slice(0, 4) + '-' + d.slice(4, 6) + '-' + d.slice(6) : (d || '');
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  // A reader's mark: POST ../studies/<id>/read or /unread as JSON (the
  // server takes no other kind, so that another site cannot mark studies).
  function mark(s, read) {
    const id = s.orthanc_id || s.study_instance_uid;
    fetch('../studies/' + encodeURIComponent(id) + (read ? '/read' : '/unread'), {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}'
    }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return refreshOnce();
    }).catch(function (e) {
      statusBox.textContent = 'cannot mark the study: ' + e.message;
      statusBox.className = 'status bad';
    });
  }

  function render(w) {
    const showPid = w.studies.some(function (s) { return 'patient_id' in s; });
    document.querySelectorAll('.pid').forEach(function (th) { th.hidden = !showPid; });
    rows.textContent = '';
    const unread = w.studies.filter(function (s) { return !s.read; });
    const read = w.studies.filter(function (s) { return s.read; });
    nread.textContent = String(read.length);
    const shown = showRead.checked ? unread.concat(read) : unread;
    if (!shown.length) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = cell(tr, w.studies.length ? 'Every study is read.' : 'No study yet.');
      td.colSpan = 10;
      rows.appendChild(tr);
      return;
    }
    shown.forEach(function (s) {
      const tr = document.createElement('tr');
      tr.className = 'study prio-' + s.priority_level + (s.read ? ' read' : '');
      tr.dataset.uid = s.study_instance_uid;
      tr.dataset.orthancId = s.orthanc_id || '';
      tr.dataset.level = String(s.priority_level);
      const p = cell(tr, '');
      const b = document.createElement('span');
      b.className = 'badge';
      b.textContent = s.priority;
      p.appendChild(b);
      if (s.escalated) {
        const e = document.createElement('span');
        e.className = 'esc';
        e.title = 'waited longer than allowed; result: ' + s.result_priority;
        e.textContent = '↑';
        p.appendChild(e);
      }
      if (s.warning) {
        // e.g. a patient outside the model's intended population: the text
        // itself on the row, not only on hover
        const wn = document.createElement('div');
        wn.className = 'warn';
        wn.title = s.warning;
        wn.textContent = '⚠ ' + s.warning;
        p.appendChild(wn);
      }
      if (s.not_analysed_reason) {
        // why the AI did not look (at all, or at some images)
        const rn = document.createElement('div');
        rn.className = 'reason';
        rn.textContent = (s.images_analysed ? s.images_not_analysed + ' not analysed: '
                                             : 'not analysed: ') + s.not_analysed_reason;
        p.appendChild(rn);
      }
      cell(tr, s.score === null || s.score === undefined ? '–' : (100 * s.score).toFixed(1) + ' %', 'num');
      cell(tr, s.accession_number || '–');
      if (showPid) cell(tr, s.patient_id || '–');
      cell(tr, studyDate(s.study_date));
      cell(tr, waiting(s.waiting_s), 'num');
      cell(tr, s.images_analysed + ' / ' + (s.images_analysed + s.images_not_analysed), 'num');
      cell(tr, [s.state, s.sr_count ? 'SR' : ''].filter(Boolean).join(', ') || '–', 'state');
      const l = cell(tr, '');
      if (s.orthanc_id) { // the plugin: the study in Orthanc Explorer
        const a = document.createElement('a');
        a.title = s.study_instance_uid;
        a.href = '../../app/explorer.html#study?uuid=' + encodeURIComponent(s.orthanc_id);
        a.textContent = 'open';
        l.appendChild(a);
        l.appendChild(document.createTextNode(' · '));
      }
      // every image's result or reason, as a page
      const d = document.createElement('a');
      d.className = 'details';
      d.title = s.study_instance_uid;
      d.href = 'study.html#' + encodeURIComponent(s.orthanc_id || s.study_instance_uid);
      d.textContent = 'details';
      l.appendChild(d);
      const m = cell(tr, '');
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'mark';
      btn.textContent = s.read ? 'unread' : 'read';
      btn.title = s.read ? 'put it back on the list' : 'done: take it off the list until a new image arrives';
      btn.addEventListener('click', function () { mark(s, !s.read); });
      m.appendChild(btn);
      rows.appendChild(tr);
    });
  }

  function renderStatus(st) {
    const q = st.queue || {};
    let text = st.state === 'ready'
      ? 'model ' + (st.model.name || '?') + ' ' + (st.model.version || '') + ' · queue ' + (q.depth || 0)
      : 'NOT SCORING: ' + (st.reason || st.state);
    statusBox.textContent = text;
    statusBox.className = 'status' + (st.state === 'ready' ? '' : ' bad');
  }

  function refreshOnce() {
    return Promise.all([
      fetch('../worklist', { cache: 'no-store' }).then(function (r) { return r.json(); }),
      fetch('../status', { cache: 'no-store' }).then(function (r) { return r.json(); })
    ]).then(function (res) {
      last = res[0];
      render(res[0]);
      renderStatus(res[1]);
      document.getElementById('updated').textContent = 'Updated ' + new Date().toLocaleTimeString() + '.';
    }).catch(function (e) {
      statusBox.textContent = 'cannot reach the server: ' + e;
      statusBox.className = 'status bad';
    });
  }

  function refresh() {
    refreshOnce().finally(function () { setTimeout(refresh, REFRESH_MS); });
  }
  showRead.addEventListener('change', function () { if (last) render(last); });
  refresh();
})();
