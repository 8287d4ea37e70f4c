#!/bin/bash
# ab3.sh "ENVA" "ENVB" rounds reps args...: one build, /tmp/mb/wg-$W (W=bf unless set), under two
# environment settings (an experiment's switch; "" for none), through ../2026-12-06c-cpu-2core-avx512/ab2.sh
# (each round tagged by the host state barrier_probe finds). The "envab" runs of the results file
# are ab3.sh "" "SWITCH=1".
W=${W:-bf}; EA=$1; EB=$2; shift 2
printf '#!/bin/bash\nexec env %s /tmp/mb/wg-%s "$@"\n' "$EA" "$W" > /tmp/mb/wg-envA
printf '#!/bin/bash\nexec env %s /tmp/mb/wg-%s "$@"\n' "$EB" "$W" > /tmp/mb/wg-envB
chmod +x /tmp/mb/wg-envA /tmp/mb/wg-envB
exec bash "$(dirname "$0")/../2026-12-06c-cpu-2core-avx512/ab2.sh" envA envB "$@"
