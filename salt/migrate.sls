{#- The orchestration behind `salt-run state.orch migrate pillar='{vm: vdisk, dest: host2}'`.
    Thin on purpose: locating, prechecks, migrating and verifying live in Python
    (_states/vmigrate.py over _utils/vmigrate_move.py, shared with the runner). The request is
    to move the VM, so one that already runs on dest fails; a failed migration fails this state
    and `state.orch` exits non-zero. `test=True` prints the plan and changes nothing. #}
vmigrate-migrate-vmigrate-migrated:
  vmigrate.migrated:
    - name: {{ pillar.get('vm', '') | json }}
    - host: {{ pillar.get('dest', '') | json }}
    - mode: {{ pillar.get('mode', 'live') | json }}
    - bandwidth: {{ pillar.get('bandwidth') | json }}
    - timeout: {{ pillar.get('timeout') | json }}
    - force: {{ pillar.get('force', False) | json }}
    - options: {{ pillar.get('options') | json }}
    - require_move: true
