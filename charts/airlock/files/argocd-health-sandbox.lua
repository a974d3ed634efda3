-- Argo CD health check for airlock.dev/Sandbox (key `resource.customizations.health.airlock.dev_Sandbox`
-- in argocd-cm; see the chart's README). Shipped with the Airlock chart, tested by
-- crds/tests/argocd_health.rs against sample Sandboxes.
--
--   Ready                                   -> Healthy
--   Pending, Starting, or a status for an
--   older generation than the spec          -> Progressing
--   Failed (invalid spec, pod failed)       -> Degraded
--   Expired (kept with its pod gone)        -> Suspended: the sandbox lived its time; remove it
--                                              from Git (or give it a new name) to run another.
local hs = {}
local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end
local function explain(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Airlock operator to report the sandbox"
  return hs
end
local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Airlock operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
local phase = status.phase
if phase == "Ready" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "Sandbox is ready"
  local adjusted = condition(status, "PolicyAdjusted")
  if adjusted ~= nil and adjusted.status == "True" then
    hs.message = hs.message .. " (" .. explain(adjusted, "adjusted by the operator's policy") .. ")"
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain(ready, "Sandbox failed")
elseif phase == "Expired" then
  hs.status = "Suspended"
  hs.message = explain(condition(status, "Expired"), "Sandbox expired")
else
  hs.status = "Progressing"
  hs.message = phase .. ": " .. explain(ready, "starting")
end
return hs
