-- route-urgent.lua — an Orthanc Lua script that sends every study the
-- cxr-triage plugin marks URGENT to a reading destination, once.
--
-- How it works: Orthanc calls OnStableStudy when no instance of a study
-- arrived for StableAge seconds. The plugin scores the study, writes its
-- metadata (CxrTriagePriority, CxrTriageLevel, CxrTriageScore, ...) and then
-- stores its SR in the study; the SR's arrival makes the study stable again,
-- so this callback runs a second time and then sees the priority.
--
-- Orthanc's configuration needs (see docs/orthanc-plugin.md):
--   "LuaScripts": ["/usr/share/cxr-triage/route-urgent.lua"],
--   "DicomModalities": { "reading": ["READING", "10.20.0.50", 104] },
--   "UserMetadata": { ..., "CxrTriageLevel": 7702, ..., "CxrTriageRouted": 7707 }

local DESTINATION = 'reading'   -- a key of "DicomModalities"
local MIN_LEVEL = 3             -- 3 URGENT; 2 would also send PRIORITY studies

function OnStableStudy(studyId, tags, metadata)
  local level = tonumber(metadata['CxrTriageLevel'] or '')
  if level == nil or level < MIN_LEVEL then
    return                      -- not scored yet, or not urgent
  end
  if (metadata['CxrTriageRouted'] or '') ~= '' then
    return                      -- sent already (a later image makes the study stable again)
  end
  print('cxr-triage: sending study ' .. studyId .. ' (' .. (metadata['CxrTriagePriority'] or '?') ..
        ', score ' .. (metadata['CxrTriageScore'] or '?') .. ') to ' .. DESTINATION)
  -- an asynchronous C-STORE job of the whole study (images and SR); Orthanc
  -- retries nothing by itself: a failed job is listed under /jobs
  local job = ParseJson(RestApiPost('/modalities/' .. DESTINATION .. '/store',
                                    DumpJson({ Resources = { studyId }, Synchronous = false })))
  print('cxr-triage: job ' .. (job['ID'] or '?') .. ' sends study ' .. studyId)
  RestApiPut('/studies/' .. studyId .. '/metadata/CxrTriageRouted', DESTINATION)
end
