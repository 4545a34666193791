"""A local Spin 3 host for the built components, for tests and for machines without ``spin``.

Every trigger runs the component with the PyPI ``wasmtime`` package's component API (the
engine Spin itself uses, set up as Spin sets it up: :mod:`active_data_flow.spin_app.engine`) and WASI written
as Python host functions (:mod:`active_data_flow.spin_app.local_host.wasi`: the package's own WASI cannot hand
a component an incoming HTTP request).
``serve --engine node`` serves HTTP with the Node host in ``scripts/spin_host/serve.mjs``
(jco + preview2-shim) instead, which also logs each instance's memory size. All of them
provide the same Spin imports over the same files, so they can share a state directory:

==============================  =====================================================
``fermyon:spin/key-value``      ``<state>/key_value.json`` (``{label: {key: base64}}``)
``fermyon:spin/sqlite``         ``<state>/sqlite_db.db`` (``default``), ``<state>/<name>.db``
``fermyon:spin/redis``          a real Redis server (redis-py)
``fermyon:spin/mqtt``           a real MQTT broker (paho-mqtt; ``mqtt://`` / ``mqtts://``)
``fermyon:spin/variables``      ``variables=`` / ``--var``, ``SPIN_VARIABLE_<NAME>`` env
``wasi:config/store``           the same variables
``wasi:http/outgoing-handler``  real outbound requests (wasmtime's WASI HTTP; urllib for HTTP)
anything else                   traps when called
==============================  =====================================================

Like Spin, every event gets a fresh instance of the component. By default a finished
instance's pool slot is reset on a thread of its own after the answer went out
(``deferred_reset``); ``deferred_reset=False`` (``--spin-like``) drops it where it ran,
before the next event is taken, as Spin drops an instance at the end of its event.

==================  ==========================================================================
``state``           ``SpinState``: the files, variables and connections the Spin imports use
``spin_imports``    the Spin interfaces (one function each) and traps for every other import
``component``       ``ComponentHost``: loads a component, a fresh instance per event
``http_server``     the HTTP trigger: ``WasmtimeHttpServer``, ``HttpHost`` (wasmtime or Node)
``triggers``        serving HTTP, Redis and MQTT from the command line; ``MqttBridge``
``command``         the command line (``python -m active_data_flow.spin_app.host``)
``wasi``            WASI 0.2 and ``wasi:http`` as Python host functions
==================  ==========================================================================

The whole package is host-side (it needs ``wasmtime``; ``redis`` and ``paho-mqtt`` are imported
lazily, ``scripts/spin-setup`` installs them): ``active_data_flow.spin_app.build`` leaves it out of every
component. :mod:`active_data_flow.spin_app.host` and :mod:`active_data_flow.spin_app.wasi_host` re-export its public names.
"""
