{#- Reactor for vmigrate/evacuate: hand the whole event to the orchestration, as data (|json).
    Nothing is decided here: a minion can put any event on the bus (see
    _utils/vmigrate_authz.py), so the runner side authorizes it from master config. #}
vmigrate-reactor-evacuate:
  runner.state.orchestrate:
    - args:
      - mods: vmigrate.orch.request
      - pillar:
          vmigrate_event:
            tag: {{ tag | json }}
            data: {{ data | json }}
