{#- Reactor for salt/beacon/*/vmigrate/*: the hypervisors' lifecycle events into the master's
    placement record (runner vmigrate.record; the event goes over whole, as data). #}
vmigrate-reactor-beacon:
  runner.vmigrate.record:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
