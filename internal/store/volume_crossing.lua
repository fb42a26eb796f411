-- A volume limit's suspension is recorded by crossing.lua once the
-- crossing's reusable record lands; until then a suspend limit's crossing
-- fails the call, so that nothing half-records it.
local function volume_crossing_read() error({err = 'volume suspension: not recorded yet'}) end
local function volume_crossing_write() error({err = 'volume suspension: not recorded yet'}) end
