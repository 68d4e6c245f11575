"""Reading subjects: UK Biobank NIfTI folders and DICOM zips, discovery of an input folder."""
