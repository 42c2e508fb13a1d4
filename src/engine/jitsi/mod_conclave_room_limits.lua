-- Conclave: per-room occupancy limits for Meetings.
--
-- Jitsi's mod_muc_max_occupants (loaded by MAX_PARTICIPANTS) enforces
-- room._data.max_occupants when a room has it, and its global limit otherwise.
-- This module sets that field when a room is created, from the limits file the
-- operator renders into a ConfigMap: one `room=limit` line per Meeting with
-- spec.maxParticipants. The file is read at each room creation, so a change
-- applies to the next room opened, without restarting prosody.

local jid_split = require "util.jid".split;

local limits_file = module:get_option_string(
    "conclave_room_limits_file", "/conclave/rooms/limits");

local function read_limits()
    local limits = {};
    local file = io.open(limits_file, "r");
    if not file then
        return limits;
    end
    for line in file:lines() do
        local room, limit = line:match("^([%w%-]+)=(%d+)$");
        if room then
            limits[room] = tonumber(limit);
        end
    end
    file:close();
    return limits;
end

module:hook("muc-room-created", function(event)
    local room = event.room;
    local node = jid_split(room.jid);
    if not node then
        return;
    end
    local limit = read_limits()[node];
    if limit and limit > 0 then
        room._data.max_occupants = limit;
        module:log("info", "room %s limited to %d occupants", node, limit);
    end
end);
