-- Loads a prosody configuration with prosody's own config manager (as prosody does at start,
-- Include directives and all) and prints every host's options as JSON on stdout.
-- Usage: lua5.4 prosody_config.lua /path/to/prosody.cfg.lua
package.path = "/usr/lib/prosody/?.lua;" .. package.path
package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath

local configmanager = require "core.configmanager"

local ok, kind, err = configmanager.load(arg[1])
if not ok then
  io.stderr:write(tostring(kind), ": ", tostring(err), "\n")
  os.exit(1)
end

local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function json(v)
  local t = type(v)
  if t == "string" then return str(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return str(tostring(v)) end
    return tostring(v)
  end
  if t == "boolean" then return tostring(v) end
  if t ~= "table" then return str("<" .. t .. ">") end
  local parts = {}
  if #v > 0 then
    for i = 1, #v do parts[i] = json(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  for k, x in pairs(v) do parts[#parts + 1] = str(tostring(k)) .. ":" .. json(x) end
  return "{" .. table.concat(parts, ",") .. "}"
end

print(json(configmanager.getconfig()))
