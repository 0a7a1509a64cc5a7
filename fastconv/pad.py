# placeholder, being written (pad helper)
def pad2d(*a, **k): raise NotImplementedError
def pad2d_backward(*a, **k): raise NotImplementedError
