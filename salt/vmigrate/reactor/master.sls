{#- Reactor for salt/run/*/new: requests fired on the master itself with
    `salt-run event.send vmigrate/request '{...}'` (or vmigrate/evacuate). Minions cannot fire
    salt/run/* tags, so this announcement, unlike the vmigrate/* event it comes with, proves
    the request came from the master. Every other runner job is passed over; the one test
    below only avoids starting an orchestration per runner job -- authorization is in Python. #}
{%- if data.get('fun') == 'runner.event.send'
      and (data.get('fun_args') or [''])[0] in ('vmigrate/request', 'vmigrate/evacuate') %}
vmigrate-reactor-master:
  runner.state.orchestrate:
    - args:
      - mods: vmigrate.orch.request
      - pillar:
          vmigrate_event:
            tag: {{ tag | json }}
            data: {{ data | json }}
{%- endif %}
