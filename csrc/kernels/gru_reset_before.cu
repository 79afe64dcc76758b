// Instantiates the forward/backward kernels and launchers of one cell for every dtype (no fused
// decode step: fusedrnn runs a reset_after=False cell's step as the recurrence at T = 1).
#include "../cells/gru_reset_before.cuh"
#include "../recurrence.cuh"

FUSEDRNN_INSTANTIATE_RECURRENCE(fusedrnn::GruResetBeforeCell)
