# placeholder, being written (pool helper)
def max_pool2d(*a, **k): raise NotImplementedError
max_pool2d_backward = avg_pool2d = avg_pool2d_backward = max_pool2d
