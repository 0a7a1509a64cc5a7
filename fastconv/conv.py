# placeholder, being written (lead)
def conv2d(*a, **k): raise NotImplementedError
conv2d_backward = corr2d = convolve2d = conv2d
