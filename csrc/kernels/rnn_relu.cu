// Instantiates the forward/backward kernels and launchers of one cell for every dtype.
#include "../cells/rnn.cuh"
#include "../recurrence.cuh"

FUSEDRNN_INSTANTIATE(fusedrnn::RnnReluCell)
