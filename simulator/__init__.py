"""A faithful, in-process simulator of Vidmob's public API (Creative Tags "Aperture" + Scoring).

It speaks both tagging dialects (the guide's ``/v1/aperture/jobs`` and the OpenAPI's ``/v1/media/aperture``),
the Scoring API (``/v1/media``, ``/v1/media/{mediaId}/status``, ``/v1/scoring/media/{mediaId}/scores``,
``/v1/media/updated-scores``), Vidmob's success wrapper and both error envelopes, plus ``/_sim/*`` control
endpoints for tests (stats, job records, reset, live config, fault injection).

Where the rules live:

* ``simulator.tagging``: standard tags per URL, client-tag matching, the ``fail`` rule, request validation;
* ``simulator.downloads``: signed download links and the JSON/CSV file shapes of the media dialect;
* ``simulator.scoring``: channels and aliases, guidelines, verdicts and summaries;
* ``simulator.state``: job/scoring timelines, the causal tagged-before-scored rule and the ``sim-*`` URL rules;
* ``simulator.server``: routes, auth, fault injection and the control endpoints.

Usage::

    from simulator import SimulatorConfig, start_simulator
    sim = start_simulator(config=SimulatorConfig(pending_s=0.05, processing_s=0.05))
    ...  # talk to sim.url with "Authorization: Bearer sim-secret-key"
    sim.stop()
"""

from simulator.config import SimulatorConfig
from simulator.server import SimulatorHandle, serve, start_simulator
from simulator.state import SimState

__all__ = ["SimState", "SimulatorConfig", "SimulatorHandle", "serve", "start_simulator"]
