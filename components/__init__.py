"""The science of stellarpop and the custom TFX components that run it on Beam."""
