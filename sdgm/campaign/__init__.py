"""The published store and what fills it: the weight-free record of every finished run, kept across allocations and
machines (store; record: a record's manifest and checks), the priorities and time estimates of a campaign (costs),
campaigns that advance the paper-wide result in short GPU allocations (waves; python -m sdgm.campaign
run|import|render|..., cli), the one archive format of campaigns and windows (archive), the store rendered per
device (render), and one short GPU window from the verdict to the campaign (window, window_parts, window_env,
window_records, pytest_lines: python -m sdgm.campaign.window). The top of the package: it may import every other
part.
"""
