-- The settle scripts (exchange, retire, retry, bury) start with this, then every lua/hooks/<name>.lua:
-- each fragment adds `hooks.<name> = function(argv, i) ... return next_i end`, which applies one effect
-- whose arguments start at argv[i]. A settle script calls apply_effects(ARGV, i) where ARGV[i] is the
-- number of effects, each given as its hook name and then its own arguments; it returns the index after.
-- skip_effects(ARGV, i) steps over such a block without applying it (a fragment may also set
-- `arity.<name>` to its fixed argument count, so the block can be skipped without running it).
local hooks = {}
local arity = {}
local function apply_effects(argv, i)
  local count = tonumber(argv[i])
  i = i + 1
  for _ = 1, count do
    local hook = hooks[argv[i]]
    if hook == nil then
      error('taskqueue: unknown effect ' .. tostring(argv[i]))
    end
    i = hook(argv, i + 1)
  end
  return i
end
local function skip_effects(argv, i)
  local count = tonumber(argv[i])
  i = i + 1
  for _ = 1, count do
    local n = arity[argv[i]]
    if n == nil then
      error('taskqueue: effect without arity ' .. tostring(argv[i]))
    end
    i = i + 1 + n
  end
  return i
end
