"""The published store and what fills it: the weight-free record of every finished run, kept across allocations and
machines (store), the priorities and time estimates of a campaign (costs), campaigns that advance the paper-wide
result in short GPU allocations (campaign: python -m sdgm.campaign.campaign) and one short GPU window from the
verdict to the campaign (gpu_window: python -m sdgm.campaign.gpu_window). The top of the package: it may import
every other part.
"""
