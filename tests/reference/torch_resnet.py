"""PyTorch twins of fastconv's models, written out in torch.nn (torchvision is not a
dependency): the tests compare fastconv's models with them and the bench scripts time the same
networks in PyTorch. ``torch`` is passed in, so importing this module needs no torch."""


def torch_resnet(torch, blocks, widths, in_channels, num_classes, stem, pool_size=1):
    """torchvision's ResNet (BasicBlock), written out: same module names, same computation."""
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(inplanes, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            if stem == "imagenet":
                self.conv1 = tnn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            else:
                self.conv1 = tnn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(widths[0])
            self.relu = tnn.ReLU(inplace=True)
            self.maxpool = tnn.MaxPool2d(3, 2, 1) if stem == "imagenet" else tnn.Identity()
            inplanes = widths[0]
            for index, (count, planes) in enumerate(zip(blocks, widths)):
                layers = []
                for block in range(count):
                    layers.append(BasicBlock(inplanes, planes,
                                             2 if index > 0 and block == 0 else 1))
                    inplanes = planes
                setattr(self, f"layer{index + 1}", tnn.Sequential(*layers))
            self.avgpool = tnn.AdaptiveAvgPool2d((pool_size, pool_size))
            self.fc = tnn.Linear(inplanes * pool_size * pool_size, num_classes)
            self.stages = len(blocks)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for index in range(self.stages):
                x = getattr(self, f"layer{index + 1}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()
