"""TensorBoard's HParams data as its plugin serves them to the HPARAMS tab, read without a
server (the plugin's own handlers over an event multiplexer of the logdir)."""
from __future__ import annotations

from tensorboard import context
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (api_pb2, backend_context, get_experiment,
                                         list_session_groups)


def _value(v):
    kind = v.WhichOneof("kind")
    return getattr(v, kind) if kind else None


def read_hparams(logdir, filters: bool = False) -> tuple[dict, dict]:
    """(experiment, groups): experiment = {"hparams": {name: discrete values or None},
    "metrics": [tags]}; groups = {group name: {"hparams": {...}, "metrics": {tag: value},
    "sessions": {session: {"status": "SUCCESS"|..., "metrics": {tag: (step, value)}}}}}.
    `filters`: list the groups as the tab does once its filters apply, every value of every
    column with a discrete domain checked (the default), rather than unfiltered."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                               data_provider=MultiplexerDataProvider(mux, str(logdir)))
    backend, request = backend_context.Context(tb), context.RequestContext()
    exp = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    experiment = {
        "hparams": {h.name: ([_value(v) for v in h.domain_discrete.values]
                             if h.HasField("domain_discrete") else None)
                    for h in exp.hparam_infos},
        "metrics": sorted(m.name.tag for m in exp.metric_infos)}
    every_status = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                    api_pb2.STATUS_RUNNING]
    query = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=every_status, aggregation_type=api_pb2.AGGREGATION_AVG,
        start_index=0, slice_size=10_000)
    for h in exp.hparam_infos if filters else ():
        if h.HasField("domain_discrete"):
            column = query.col_params.add(hparam=h.name)
            column.filter_discrete.CopyFrom(h.domain_discrete)
    listed = list_session_groups.Handler(request, backend, "", query).run()
    groups = {}
    for g in listed.session_groups:
        groups[g.name] = {
            "hparams": {k: _value(v) for k, v in g.hparams.items()},
            "metrics": {m.name.tag: m.value for m in g.metric_values},
            "sessions": {s.name: {"status": api_pb2.Status.Name(s.status).removeprefix("STATUS_"),
                                  "metrics": {m.name.tag: (m.training_step, m.value)
                                              for m in s.metric_values}}
                         for s in g.sessions}}
    return experiment, groups


def run_names(logdir) -> set[str]:
    """The run list TensorBoard shows for `tensorboard --logdir logdir` (its multiplexer's
    names: each events folder relative to the logdir)."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    return set(mux.Runs())
