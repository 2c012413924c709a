// The study page of the reading worklist (study.html#<id>): the node's
// ../studies/<StudyInstanceUID> or the plugin's ../studies/<Orthanc ID>, as
// a page: the study's priority, score, SR and deliveries, then every image
// with its result, or the reason it was not analysed. Values are written
// with textContent only.
'use strict';
(function () {
  const id = decodeURIComponent(location.hash.slice(1));
  const statusBox = document.getElementById('status');
  const facts = document.getElementById('facts');
  const rows = document.getElementById('rows');
  const url = '../studies/' + encodeURIComponent(id);
  document.getElementById('raw').href = url;

  function pct(p) {
    return p === null || p === undefined ? '–' : (100 * p).toFixed(1) + ' %';
  }

  function fact(name, value, cls) {
    if (value === undefined || value === null || value === '') return;
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    th.textContent = name;
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = String(value);
    tr.appendChild(th);
    tr.appendChild(td);
    facts.appendChild(tr);
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function render(s) {
    document.title = 'CXR triage · ' + (s.accession_number || s.study_instance_uid);
    statusBox.textContent = s.priority + (s.escalated ? ' (escalated: waited too long)' : '');
    statusBox.className = 'status prio-' + s.priority_level;
    fact('Priority', s.priority + (s.escalated ? ' ↑ (result ' + s.result_priority + ')' : ''));
    fact('Score (highest)', pct(s.score));
    fact('Accession', s.accession_number);
    fact('Patient ID', s.patient_id);
    fact('Study date', s.study_date);
    fact('Study Instance UID', s.study_instance_uid);
    fact('Images', s.images_analysed + ' analysed, ' + s.images_not_analysed + ' not analysed');
    fact('Warning', s.warning ? '⚠ ' + s.warning : '', 'warn');
    fact('Not analysed because', s.not_analysed_reason, 'reason');
    fact('State', s.state);
    fact('SRs', s.sr_count);
    fact('Last SR', s.last_sr_sop_instance_uid || s.sr_sop_uid);
    if (s.deliveries)
      fact('SR deliveries', s.deliveries.delivered + ' delivered, ' + s.deliveries.pending +
           ' pending, ' + s.deliveries.dead + ' dead');
    fact('Model', [s.model_version, s.model_sha256 ? 'sha256 ' + s.model_sha256.slice(0, 12) : '']
      .filter(Boolean).join(' · '));
    fact('Last error', s.last_error, 'reason');
    rows.textContent = '';
    (s.instances || []).forEach(function (im, i) {
      const tr = document.createElement('tr');
      tr.className = 'image ' + im.state;
      cell(tr, String(i + 1), 'num');
      cell(tr, im.state === 'analysed' ? im.priority : im.state === 'not_analysed'
        ? 'not analysed' : 'waiting');
      cell(tr, im.state === 'analysed' ? pct(im.score) : '–', 'num');
      cell(tr, im.finding || '–');
      const w = cell(tr, '', im.reason ? 'reason' : (im.warning ? 'warn' : ''));
      w.textContent = im.reason ? im.reason : (im.warning ? '⚠ ' + im.warning : '');
      cell(tr, im.sop_instance_uid || '', 'uid');
      rows.appendChild(tr);
    });
    if (!rows.children.length) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      cell(tr, 'No image.').colSpan = 6;
      rows.appendChild(tr);
    }
  }

  if (!id) {
    statusBox.textContent = 'no study named (study.html#<Study Instance UID>)';
    statusBox.className = 'status bad';
    return;
  }
  fetch(url, { cache: 'no-store' }).then(function (r) {
    if (!r.ok) throw new Error('HTTP ' + r.status);
    return r.json();
  }).then(render).catch(function (e) {
    statusBox.textContent = 'cannot read the study: ' + e.message;
    statusBox.className = 'status bad';
  });
})();
